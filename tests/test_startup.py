"""Start-up pays only for what a command uses: `import bertkit` and `bertkit --help` without torch, a CPU
embedding without torch's compiler stack (varlen, the custom-op wrapper, a model built on the meta device each
pulled it in: ~1 s), and the lazy package still hands out the same public names."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import bertkit
from bertkit.config import PRESETS, BertConfig
from bertkit.memory import weight_bound
from bertkit.model import BertModel


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_bertkit_and_help_do_not_import_torch():
    assert "torch" not in modules_after("import bertkit, bertkit.cli")
    held = modules_after("from bertkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert "torch" not in held and "bertkit.cli" in held


def test_a_command_fills_in_only_its_own_arguments():
    held = modules_after("from bertkit.cli import build_parser\nbuild_parser('vocab').parse_args(['vocab', 'build', "
                         "'--corpus', 'x', '--size', '9', '--out', 'y'])")
    assert "bertkit.train.finetune" not in held and "bertkit.serving.app" not in held
    from bertkit.cli import COMMANDS, build_parser

    full = build_parser()  # every command filled in, as the tests of each command use it
    assert set(full._subparsers._group_actions[0].choices) == set(COMMANDS)


@pytest.mark.heavy
def test_cpu_inference_does_not_import_the_compiler_stack(minilm_dir):
    for precision in ("fp32", "auto"):
        held = modules_after(f"import torch\nfrom bertkit.serving.load import load_for_inference\n"
                             f"m, tok = load_for_inference({str(minilm_dir)!r}, device='cpu', kind='encoder', "
                             f"precision={precision!r})\nm(**tok(['a short text', 'and a longer one than that']))")
        assert "torch._dynamo" not in held and "torch.nn.attention.varlen" not in held, precision


def test_lazy_names_are_the_objects_themselves():
    import bertkit.generate  # the submodule: the package attribute stays the function
    from bertkit.generate import generate
    from bertkit.model import BertModel as core

    assert bertkit.generate is generate and bertkit.BertModel is core
    assert set(bertkit.__all__) <= set(dir(bertkit))
    with pytest.raises(AttributeError):
        bertkit.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.get("model_type", "bert") not in
                                  ("gpt2", "t5", "mt5", "bart")])
def test_weight_bound_is_above_every_encoder_preset(name):
    """check_fits skips building the model on the meta device when this bound fits: it must never be low."""
    config = BertConfig.from_preset(name)
    with torch.device("meta"):
        need = 4 * sum(p.numel() for p in BertModel(config).parameters())
    assert need <= weight_bound(config)
    assert weight_bound(config) <= 4 * need or config.model_type == "albert"  # ALBERT's layers share one set of weights


def flushed_after(code: str) -> bool:
    """Whether a fresh interpreter flushes denormal floats to zero after running `code`."""
    probe = "\nimport torch; print(float(torch.tensor([1e-39]) * torch.tensor([1.0])) == 0.0)"
    out = subprocess.run([sys.executable, "-c", code + probe], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1] == "True"


@pytest.mark.heavy
def test_loading_sets_nothing_process_wide_and_the_commands_init_does(minilm_dir, tmp_path):
    """load_for_inference leaves the process's settings alone; the inference commands call init_inference, which
    flushes denormals (where the CPU can), and a library user may call it too."""
    if not flushed_after("import torch\ntorch.set_flush_denormal(True)"):
        pytest.skip("this CPU cannot flush denormals")
    assert not flushed_after(f"import bertkit\nbertkit.load_for_inference({str(minilm_dir)!r}, precision='fp32')")
    assert flushed_after("import bertkit\nbertkit.init_inference()")
    (tmp_path / "in.txt").write_text("a text\n", encoding="utf-8")
    command = (f"from bertkit.cli import main\nassert main(['embed', {str(minilm_dir)!r}, '--input', {str(tmp_path / 'in.txt')!r}, "
               f"'--output', {str(tmp_path / 'out.npy')!r}, '--precision', 'fp32', '--quiet']) == 0")
    assert flushed_after(command)
