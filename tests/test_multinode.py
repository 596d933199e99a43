"""Two machines, for real, on one: two network namespaces joined by a veth pair, one torchrun node in each with a c10d
rendezvous on the first one's address (gloo over the veth). Fine-tuning on 2 nodes x 1 process gives the weights of one
process with the same global batch; pretraining (each rank reads its own shards) the weights of 2 processes on one
machine (within float rounding: gloo over the veth vs. loopback); only rank 0 writes. Skips with its reason where namespaces cannot be made; removes them whatever happens."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import test_pretrain
import test_train
from test_train import assert_same_weights, weights

pytestmark = pytest.mark.heavy  # torchrun across two network namespaces: not in make test-fast

BIN = Path(sys.executable).parent
reviews, small, small_tok = test_train.reviews, test_train.small, test_train.small_tok  # the fixtures, shared
zh_docs, small_corpus, prepared = test_pretrain.zh_docs, test_pretrain.small_corpus, test_pretrain.prepared
ADDR = ("10.213.7.1", "10.213.7.2")


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def two_hosts():
    """Yields the two namespaces' names; each has lo and its end of the veth pair up, ADDR[0] and ADDR[1]."""
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2) here")
    tag = f"{os.getpid() % 100000}"
    names, links = (f"bk{tag}a", f"bk{tag}b"), (f"vk{tag}a", f"vk{tag}b")
    made: list[str] = []
    try:
        for n in names:
            r = ip("netns", "add", n)
            if r.returncode != 0:
                pytest.skip(f"cannot make a network namespace here ({r.stderr.strip()})")
            made.append(n)
        steps = [("link", "add", links[0], "type", "veth", "peer", "name", links[1])]
        for n, link, addr in zip(names, links, ADDR):
            steps += [("link", "set", link, "netns", n), ("-n", n, "addr", "add", f"{addr}/24", "dev", link),
                      ("-n", n, "link", "set", link, "up"), ("-n", n, "link", "set", "lo", "up")]
        for s in steps:
            r = ip(*s)
            if r.returncode != 0:
                pytest.skip(f"cannot join the namespaces: ip {' '.join(s)}: {r.stderr.strip()}")
        yield names, links
    finally:
        for n in made:  # the veth pair goes with them
            ip("netns", "del", n)


def on_two_nodes(names, links, args: list[str], outs: tuple[Path, Path], port: int) -> Path:
    """`torchrun --nnodes 2 ... bertkit ARGS --out OUT` in each namespace, each node its own --out: the one the rank-0
    process wrote is returned, the other must stay unwritten (c10d hands out ranks in the order nodes join). --local-addr:
    the namespaces share a hostname, so each node says which address is its own."""
    procs = []
    for rank, (n, link, out) in enumerate(zip(names, links, outs)):
        cmd = ["ip", "netns", "exec", n, str(BIN / "torchrun"), "--nnodes", "2", "--nproc-per-node", "1", "--local-addr", ADDR[rank],
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{ADDR[0]}:{port}", "--rdzv-id", f"bk{port}",
               "--rdzv-conf", f"is_host={str(rank == 0).lower()}", str(BIN / "bertkit"),
               *args, "--out", str(out)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                      env=dict(os.environ, GLOO_SOCKET_IFNAME=link, PYTHONUNBUFFERED="1")))
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for q in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(q.pid, 9)
            pytest.fail("the two-node run hung:\n" + "\n".join(q.communicate()[1][-2000:] for q in procs))
        errs.append(err)
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]
    written = [o for o in outs if o.exists()]
    assert len(written) == 1, f"written by more than rank 0: {written}"  # only rank 0 writes
    return written[0]


def test_two_nodes_train_and_pretrain_as_one_machine_does(tmp_path, small, small_tok, prepared):
    with two_hosts() as (names, links):
        common = ["train", "classify", "--model", "bert-tiny", "--data", str(small), "--max-steps", "6", "--batch-size", "16",
                  "--lr", "5e-4", "--max-length", "48", "--tokenizer", small_tok, "--dropout", "0", "--quiet"]
        one = subprocess.run([str(BIN / "bertkit"), *common, "--out", str(tmp_path / "one")], capture_output=True, text=True)
        assert one.returncode == 0, one.stderr
        out = on_two_nodes(names, links, common, (tmp_path / "node0", tmp_path / "node1"), 29611)
        assert_same_weights(weights(tmp_path / "one"), weights(out), tol=2e-6)  # the tolerance of the 2-process test

        pre = ["pretrain", "--model", "bert-tiny", "--corpus", str(prepared.dir), "--max-steps", "4", "--batch-size", "8",
               "--max-length", "64", "--quiet"]
        local = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "bertkit"), *pre,
                                "--out", str(tmp_path / "p-local")], capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, GLOO_SOCKET_IFNAME="lo"))
        assert local.returncode == 0, local.stderr[-3000:]
        out = on_two_nodes(names, links, pre, (tmp_path / "p-node0", tmp_path / "p-node1"), 29612)
        assert_same_weights(weights(tmp_path / "p-local", "model"), weights(out, "model"), tol=2e-6)
