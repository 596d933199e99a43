"""Training that survives faults: --auto-resume under torchrun's restarts (a worker SIGKILLed mid-run), a full disk,
damaged checkpoints and corpus shards named, and the same command giving the same weights. (The server's faults are
in test_serve.py, the tokenizer's threads in test_tokenizer.py, two machines in test_multinode.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_train
import torch
from test_train import _cli_args, assert_same_weights, tiny, weights

from bertkit import BertkitError
from bertkit.train.finetune import train

pytestmark = pytest.mark.heavy  # torchrun, SIGKILL, a full tmpfs: not in make test-fast

BIN = Path(sys.executable).parent
reviews, small, small_tok = test_train.reviews, test_train.small, test_train.small_tok  # the fixtures, shared


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_auto_resume_starts_afresh_then_continues(tmp_path, small, small_tok):
    kw = dict(max_steps=6, save_every=3, tokenizer=small_tok, auto_resume=True)
    train(tiny(tmp_path / "full", small, max_steps=6, save_every=3, tokenizer=small_tok))
    out = tmp_path / "run"
    train(tiny(out, small, **{**kw, "max_steps": 6}))  # missing --out: a fresh run
    assert_same_weights(weights(tmp_path / "full"), weights(out))
    train(tiny(out, small, **kw))  # finished: resumes at its last step, nothing more to do, same weights
    assert_same_weights(weights(tmp_path / "full"), weights(out))
    (out / "checkpoint").rename(tmp_path / "elsewhere")  # died before its first checkpoint: only its start files
    (out / "model").rename(tmp_path / "elsewhere-model")
    train(tiny(out, small, **kw))
    assert_same_weights(weights(tmp_path / "full"), weights(out))
    assert losses(out) == losses(tmp_path / "full")
    with pytest.raises(BertkitError, match="--lr was 0.0005 when the run started"):
        train(tiny(out, small, **{**kw, "lr": 1e-3}))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(BertkitError, match="not empty and holds no checkpoint of this run"):
        train(tiny(other, small, **kw))
    assert (other / "notes.txt").read_text() == "mine"  # never cleared


def _workers(agent: int) -> list[int]:
    """The pids of torchrun's worker processes (its children running bertkit)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(agent)], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "bertkit" in line]


def test_torchrun_restarts_a_killed_worker_and_the_run_ends_as_if_uninterrupted(tmp_path, small, small_tok):
    """2 processes under `torchrun --max-restarts 1` with --auto-resume; one worker SIGKILLed mid-run; torchrun restarts
    the group, which resumes from the last checkpoint: weights and every logged loss bit-identical to an uninterrupted
    2-process run, and the log says where it resumed."""
    steps = 30

    def launch(out: Path) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "--max-restarts", "1", str(BIN / "bertkit"),
                                 *[x for x in _cli_args(out, small, steps, small_tok) if x != "--quiet"], "--dropout", "0", "--auto-resume"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def finish(p: subprocess.Popen) -> tuple[int, str]:
        try:
            _, err = p.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
            pytest.fail("the run hung:\n" + err.decode()[-4000:])
        return p.returncode, err.decode()

    code, err = finish(launch(tmp_path / "full"))
    assert code == 0, err[-3000:]
    cut = launch(tmp_path / "cut")
    log, deadline, killed = tmp_path / "cut" / "log.jsonl", time.time() + 120, None
    while time.time() < deadline and cut.poll() is None:  # kill a worker once a checkpoint exists and the run is past it
        if log.exists() and sum('"loss"' in line for line in log.read_text().splitlines()) >= 12:
            victims = _workers(cut.pid)
            if victims:
                killed = victims[-1]
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.02)
    assert killed is not None, "the run finished before a worker could be killed"
    code, err = finish(cut)
    assert code == 0, err[-3000:]  # torchrun restarted the group, and the restart finished the run
    assert "resumed" in err and "at step 10 of 30" in err, err[-3000:]  # the log says where it resumed
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "cut"))
    assert_same_weights(weights(tmp_path / "full", "model"), weights(tmp_path / "cut", "model"))
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")  # one clean log, every step as in the uninterrupted run


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()})")


def test_a_full_disk_keeps_the_last_checkpoint_and_auto_resume_continues(tmp_path, small, small_tok, monkeypatch):
    """--out on a small tmpfs that fills up after the first checkpoint: the next one fails; the run stops with one
    sentence naming the path and the reason, the previous checkpoint stays complete and loadable, and --auto-resume
    (with space again) continues it to the weights of an uninterrupted run."""
    from bertkit.train.loop import Loop

    kw = dict(max_steps=9, save_every=3, tokenizer=small_tok, auto_resume=True)
    train(tiny(tmp_path / "full", small, **kw))
    size = sum(p.stat().st_size for p in (tmp_path / "full").rglob("*") if p.is_file())
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, f"{3 * size // 1024 + 1024}k")
    try:
        out, filler = disk / "run", disk / "filler"
        save = Loop.save

        def save_then_fill(self):  # after the first checkpoint, the disk is full but for 100 kB
            save(self)
            if not filler.exists():
                st = os.statvfs(disk)
                filler.write_bytes(bytes(max(st.f_bavail * st.f_frsize - 100_000, 0)))

        monkeypatch.setattr(Loop, "save", save_then_fill)
        with pytest.raises(BertkitError) as e:
            train(tiny(out, small, **kw))
        monkeypatch.setattr(Loop, "save", save)
        msg = str(e.value)
        assert f"writing {out}/" in msg and "No space left on device" in msg and "the checkpoint of step 3 is kept" in msg, msg
        assert "\n" not in msg and "--auto-resume" in msg
        assert not (out / "checkpoint.tmp").exists()  # the partial copy is gone
        assert torch.load(out / "checkpoint" / "trainer_state.pt", weights_only=True)["state"]["step"] == 3
        filler.unlink()  # space again
        train(tiny(out, small, **kw))
        assert_same_weights(weights(tmp_path / "full"), weights(out))
        assert losses(out) == losses(tmp_path / "full")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_damaged_checkpoint_is_named_never_resumed_from(tmp_path, small, small_tok):
    kw = dict(max_steps=4, save_every=2, tokenizer=small_tok)
    out = tmp_path / "run"
    train(tiny(out, small, **kw))
    weights_file = out / "checkpoint" / "model" / "model.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-64:] = bytes(64)  # the same size, other numbers: the kind of damage a loader alone cannot see
    weights_file.write_bytes(bytes(data))
    with pytest.raises(BertkitError, match=r"the checkpoint file .*model\.safetensors is damaged"):
        train(tiny(out, small, **kw, resume=True))
    (out / "checkpoint" / "trainer_state.pt").unlink()
    with pytest.raises(BertkitError, match="no checkpoint to resume from"):
        train(tiny(out, small, **kw, resume=True))


def test_a_damaged_corpus_shard_is_named(tmp_path):
    from bertkit.data.corpus import Corpus, export_corpus, prepare
    from bertkit.tokenizer import train_wordpiece

    text = export_corpus(tmp_path / "text")
    lines = text.read_text(encoding="utf-8").splitlines()[:3000]
    tok = train_wordpiece([t for t in lines if t], 2000)
    d = prepare([str(text)], tok, tmp_path / "corpus", shard_tokens=20_000)
    Corpus(d).verify()
    shard = sorted(d.glob("shard-*.ids"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(BertkitError, match=f"{shard.name} .*truncated or extended"):
        Corpus(d).verify()
    shard.write_bytes(bytes(len(data)))  # overwritten, the same size
    with pytest.raises(BertkitError, match=f"{shard.name} is damaged"):
        Corpus(d).verify()


def test_the_same_train_command_twice_gives_the_same_weights(tmp_path, small):
    """From a preset, with the vocabulary trained on the data each time (it used to differ between runs)."""
    for d in ("a", "b"):
        train(tiny(tmp_path / d, small, max_steps=4))
    assert (tmp_path / "a/model/vocab.txt").read_bytes() == (tmp_path / "b/model/vocab.txt").read_bytes()
    assert (tmp_path / "a/model/model.safetensors").read_bytes() == (tmp_path / "b/model/model.safetensors").read_bytes()


def test_save_minutes_checkpoints_by_the_clock(tmp_path, small, small_tok, monkeypatch):
    from bertkit.train.loop import Loop

    saves = []
    save = Loop.save
    monkeypatch.setattr(Loop, "save", lambda self: (saves.append(self.state.step), save(self)))
    train(tiny(tmp_path / "steps", small, max_steps=5, save_every=1000, eval_every=1000, tokenizer=small_tok))
    assert saves == [5]  # by steps: only at the end
    saves.clear()
    train(tiny(tmp_path / "clock", small, max_steps=5, save_every=1000, eval_every=1000, tokenizer=small_tok, save_minutes=1e-9))
    assert saves == [1, 2, 3, 4, 5]  # every step is past the minutes since the last checkpoint
    assert_same_weights(weights(tmp_path / "steps"), weights(tmp_path / "clock"))  # when it saves changes nothing else
    with pytest.raises(BertkitError, match="--save-minutes must be a positive number of minutes, not -1"):
        train(tiny(tmp_path / "bad", small, tokenizer=small_tok, save_minutes=-1))
    assert not (tmp_path / "bad").exists()
