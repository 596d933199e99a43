"""The TF checkpoint reader against a checkpoint TensorFlow wrote (tests/fixtures/tf_bert_tiny, made by
tests/fixtures/make_tf_fixture.py), against damaged copies of it, and, when tensorflow is
installed, against fresh checkpoints TensorFlow writes during the test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bertkit.errors import BertkitError
from bertkit.io import tfcheckpoint
from bertkit.io.tfcheckpoint import find_tf_checkpoint, read_tf_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "tf_bert_tiny"
PREFIX = FIXTURE / "bert_model.ckpt"
DATA_NAME = "bert_model.ckpt.data-00000-of-00001"


def google_bert_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every variable Google's modeling.py + run_pretraining.py create, with its shape."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    shapes = {
        "bert/embeddings/word_embeddings": (v, h),
        "bert/embeddings/token_type_embeddings": (config["type_vocab_size"], h),
        "bert/embeddings/position_embeddings": (config["max_position_embeddings"], h),
    }

    def dense(prefix: str, n_in: int, n_out: int) -> None:
        shapes.update({f"{prefix}/kernel": (n_in, n_out), f"{prefix}/bias": (n_out,)})

    def layer_norm(prefix: str) -> None:
        shapes.update({f"{prefix}/gamma": (h,), f"{prefix}/beta": (h,)})

    layer_norm("bert/embeddings/LayerNorm")
    for n in range(config["num_hidden_layers"]):
        layer = f"bert/encoder/layer_{n}"
        for part in ("query", "key", "value"):
            dense(f"{layer}/attention/self/{part}", h, h)
        dense(f"{layer}/attention/output/dense", h, h)
        layer_norm(f"{layer}/attention/output/LayerNorm")
        dense(f"{layer}/intermediate/dense", h, i)
        dense(f"{layer}/output/dense", i, h)
        layer_norm(f"{layer}/output/LayerNorm")
    dense("bert/pooler/dense", h, h)
    dense("cls/predictions/transform/dense", h, h)
    layer_norm("cls/predictions/transform/LayerNorm")
    shapes["cls/predictions/output_bias"] = (v,)
    shapes["cls/seq_relationship/output_weights"] = (2, h)
    shapes["cls/seq_relationship/output_bias"] = (2,)
    return shapes


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    return read_tf_checkpoint(PREFIX)


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Path:
    """A private copy of the fixture checkpoint to damage; returns its prefix."""
    for name in ("bert_model.ckpt.index", DATA_NAME):
        shutil.copy(FIXTURE / name, tmp_path / name)
    return tmp_path / "bert_model.ckpt"


def test_every_google_variable_with_its_shape(tensors):
    config = json.loads((FIXTURE / "bert_config.json").read_text())
    for name, shape in google_bert_shapes(config).items():
        assert tensors[name].shape == shape, name
        assert tensors[name].dtype == np.float32, name


def test_global_step_and_adam_slots(tensors):
    assert tensors["global_step"].dtype == np.int64
    assert tensors["global_step"].shape == ()
    slots = [name for name in tensors if name.endswith(("/adam_m", "/adam_v"))]
    assert "bert/pooler/dense/kernel/adam_m" in slots and "bert/pooler/dense/kernel/adam_v" in slots
    for slot in slots:
        assert tensors[slot].shape == tensors[slot.rsplit("/", 1)[0]].shape


def test_values_are_what_tensorflow_wrote(tensors):
    with np.load(FIXTURE / "weights.npz") as written:
        assert sorted(tensors) == sorted(written.files)
        for name in written.files:
            assert tensors[name].dtype == written[name].dtype, name
            np.testing.assert_array_equal(tensors[name], written[name], err_msg=name)


@pytest.mark.parametrize("form", ["prefix", "index", "data", "directory", "string"])
def test_path_forms(form, tensors):
    path = {
        "prefix": PREFIX,
        "index": FIXTURE / "bert_model.ckpt.index",
        "data": FIXTURE / DATA_NAME,
        "directory": FIXTURE,
        "string": str(PREFIX),
    }[form]
    again = read_tf_checkpoint(path)
    assert sorted(again) == sorted(tensors)
    np.testing.assert_array_equal(again["bert/pooler/dense/kernel"], tensors["bert/pooler/dense/kernel"])


def test_find_prefers_the_state_file_then_the_highest_step(tmp_path: Path):
    for step in (200, 1000, 30):
        (tmp_path / f"model.ckpt-{step}.index").touch()
    assert find_tf_checkpoint(tmp_path) == tmp_path / "model.ckpt-1000"
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "/old/place/model.ckpt-200"\nall_model_checkpoint_paths: "/old/place/model.ckpt-30"\n'
    )
    assert find_tf_checkpoint(tmp_path) == tmp_path / "model.ckpt-200"


def test_find_in_empty_or_ambiguous_directory(tmp_path: Path):
    assert find_tf_checkpoint(tmp_path) is None
    (tmp_path / "a.ckpt.index").touch()
    (tmp_path / "b.ckpt.index").touch()
    with pytest.raises(BertkitError, match="several TF checkpoints"):
        find_tf_checkpoint(tmp_path)


def test_directory_without_checkpoint(tmp_path: Path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(BertkitError, match=f"{tmp_path}.*no TF checkpoint"):
        read_tf_checkpoint(tmp_path)


def test_missing_index_file(tmp_path: Path):
    with pytest.raises(BertkitError, match=r"index file .*model\.ckpt\.index does not exist"):
        read_tf_checkpoint(tmp_path / "model.ckpt")


def test_missing_data_file(fixture_copy: Path):
    (fixture_copy.parent / DATA_NAME).unlink()
    with pytest.raises(BertkitError, match=rf"data file .*{DATA_NAME} does not exist"):
        read_tf_checkpoint(fixture_copy)


def test_truncated_data_file(fixture_copy: Path):
    data = fixture_copy.parent / DATA_NAME
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size - 100)
    message = rf"{DATA_NAME} is {size - 100} bytes but tensor '.+' needs bytes \d+\.\.\d+"
    with pytest.raises(BertkitError, match=message):
        read_tf_checkpoint(fixture_copy)


def test_corrupted_data_fails_the_crc(fixture_copy: Path):
    data = fixture_copy.parent / DATA_NAME
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(BertkitError, match=rf"{DATA_NAME} is corrupted: tensor '.+' fails its crc32c"):
        read_tf_checkpoint(fixture_copy)


def test_entry_size_must_match_its_shape(tmp_path: Path):
    data = tmp_path / "m.data-00000-of-00001"
    data.write_bytes(bytes(64))
    shape_3x2 = b"\x12\x02\x08\x03\x12\x02\x08\x02"  # TensorShapeProto: dim {size: 3} dim {size: 2}
    entry = {1: [1], 2: [shape_3x2], 3: [0], 4: [0], 5: [20]}  # float32 [3, 2] is 24 bytes, not 20
    with pytest.raises(BertkitError, match=rf"{data}: tensor 'w' of shape \[3, 2\] needs 24 bytes but .* says 20"):
        tfcheckpoint._read_tensor("w", entry, tfcheckpoint._open_shards(tmp_path / "m", 1))


def index_block_handle(raw: bytes) -> tuple[int, int]:
    """(offset, size) of the index block: the second BlockHandle in the 48-byte footer."""
    footer, pos = raw[-48:], 0
    for _ in range(2):  # skip the metaindex handle's offset and size
        _, pos = tfcheckpoint._read_varint(footer, pos)
    offset, pos = tfcheckpoint._read_varint(footer, pos)
    size, _ = tfcheckpoint._read_varint(footer, pos)
    return offset, size


def damage_index(prefix: Path, damage) -> Path:
    index = Path(f"{prefix}.index")
    index.write_bytes(damage(bytearray(index.read_bytes())))
    return index


def flip_magic(raw: bytearray) -> bytes:
    raw[-3] ^= 0xFF
    return bytes(raw)


def flip_entry_byte(raw: bytearray) -> bytes:
    raw[20] ^= 0x01  # inside the first data block, so its crc no longer matches
    return bytes(raw)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (flip_magic, "bad table magic number"),
        (lambda raw: bytes(raw[: len(raw) // 2]), "bad table magic number"),  # footer gone
        (lambda raw: bytes(raw[:30]), "shorter than the 48-byte footer"),
        (lambda raw: bytes(raw[:100]) + bytes(raw[-48:]), "lies outside the file"),  # blocks cut out
        (flip_entry_byte, "fails its crc32c check"),
    ],
)
def test_corrupted_index(fixture_copy: Path, damage, problem: str):
    index = damage_index(fixture_copy, damage)
    with pytest.raises(BertkitError, match=rf"index file {index} is corrupted or truncated: .*{problem}"):
        read_tf_checkpoint(fixture_copy)


def test_compressed_block_is_refused(fixture_copy: Path):
    def mark_index_block_snappy(raw: bytearray) -> bytes:
        offset, size = index_block_handle(bytes(raw))
        raw[offset + size] = 1  # trailer type byte: 1 = snappy; re-sign it so only the type is wrong
        crc = tfcheckpoint.masked_crc32c(bytes(raw[offset : offset + size + 1]))
        raw[offset + size + 1 : offset + size + 5] = crc.to_bytes(4, "little")
        return bytes(raw)

    damage_index(fixture_copy, mark_index_block_snappy)
    with pytest.raises(BertkitError, match="is compressed"):
        read_tf_checkpoint(fixture_copy)


@pytest.mark.parametrize("size", [0, 1, 9, 4095, 4096, 100_003, 1 << 20])
def test_crc32c_matches_bytewise_reference(size: int):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    crc = 0xFFFFFFFF
    for byte in data.tobytes():
        crc = tfcheckpoint.CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    assert tfcheckpoint._crc32c(data) == crc ^ 0xFFFFFFFF


def test_crc32c_check_value():
    assert tfcheckpoint._crc32c(np.frombuffer(b"123456789", dtype=np.uint8)) == 0xE3069283  # the standard check


# --- against TensorFlow itself -------------------------------------------------------------------------


def fresh_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tensors of every supported dtype and rank, plus enough long-named ones to need several
    index blocks (TF's table writer starts a new block every 256 KiB)."""
    tensors = {
        "scalar": np.float32(3.5),
        "cube": rng.normal(size=(3, 4, 5)).astype(np.float32),
        "ints": np.arange(-5, 7, dtype=np.int32),
        "step": np.array(123456789012, dtype=np.int64),
        "doubles": rng.normal(size=(2, 3)),
        "halves": rng.normal(size=(4, 2)).astype(np.float16),
        "bytes": np.array([0, 7, 255], dtype=np.uint8),
        "small_ints": np.array([-128, 0, 127], dtype=np.int8),
        "shorts": np.array([[-30000, 5], [0, 30000]], dtype=np.int16),
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "big": rng.normal(size=(300, 70)).astype(np.float32),
    }
    for n in range(1500):
        tensors[f"layer_{n:04d}/" + "very_long_scope_name/" * 8 + "kernel"] = rng.normal(size=(2,)).astype(np.float32)
    return tensors


def test_reads_exactly_what_tensorflow_writes(tmp_path: Path):
    tf = pytest.importorskip("tensorflow")
    tensors = fresh_tensors(np.random.default_rng(7))
    bfloat16 = np.random.default_rng(8).normal(size=(5, 3)).astype(np.float32)
    names = [*tensors, "bf16", "note"]
    values = [tf.constant(v) for v in tensors.values()]
    values += [tf.cast(tf.constant(bfloat16), tf.bfloat16), tf.constant(["strings are skipped"])]
    prefix = tmp_path / "model.ckpt-5"
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names), tensors=values)

    read = read_tf_checkpoint(tmp_path)
    assert sorted(read) == sorted([*tensors, "bf16"])  # the DT_STRING tensor is skipped
    for name, value in tensors.items():
        assert read[name].dtype == value.dtype and read[name].shape == value.shape, name
        np.testing.assert_array_equal(read[name], value, err_msg=name)
    expected_bf16 = tf.cast(tf.cast(tf.constant(bfloat16), tf.bfloat16), tf.float32).numpy()
    assert read["bf16"].dtype == np.float32
    np.testing.assert_array_equal(read["bf16"], expected_bf16)
    assert index_block_count(Path(f"{prefix}.index")) > 1


def test_reads_a_tf1_saver_checkpoint(tmp_path: Path):
    tf = pytest.importorskip("tensorflow")
    values = {"bert/embeddings/word_embeddings": np.random.default_rng(3).normal(size=(11, 4)).astype(np.float32)}
    graph = tf.Graph()
    with graph.as_default():
        step = tf.compat.v1.train.get_or_create_global_step()
        for name, value in values.items():
            tf.compat.v1.get_variable(name, initializer=tf.constant(value))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(step.assign(42))
            saver.save(session, str(tmp_path / "model.ckpt"), global_step=42)
    read = read_tf_checkpoint(tmp_path)  # found through the `checkpoint` state file
    assert read["global_step"] == 42 and read["global_step"].dtype == np.int64
    np.testing.assert_array_equal(read["bert/embeddings/word_embeddings"], values["bert/embeddings/word_embeddings"])


def index_block_count(index: Path) -> int:
    """How many data blocks the index block of a table points to."""
    raw = index.read_bytes()
    return len(tfcheckpoint._block_entries(raw, *index_block_handle(raw)))
