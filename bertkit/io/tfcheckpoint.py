"""Read Google's TensorFlow BERT checkpoints (TF "V2" tensor bundles) without TensorFlow.

A checkpoint is a prefix such as `bert_model.ckpt` naming two kinds of file:

* `PREFIX.index` is an SSTable in LevelDB's format as TensorFlow copied it
  (`tensorflow/core/lib/io/table*`, `format.cc`; LevelDB's `doc/table_format.md`). The file
  ends in a 48-byte footer: two BlockHandles (offset, size as protobuf varints) for the
  metaindex and the index block, zero padding, and the fixed64 magic 0xdb4775248b80fb57.
  The index block maps a separator key to the handle of each data block. A block is a run of
  entries `varint shared, varint non_shared, varint value_len, key_suffix, value` whose keys
  share a prefix with the previous key, then a uint32 restart array and its uint32 count; on
  disk each block is followed by a 5-byte trailer (compression type, masked crc32c).
* The table's values are protobufs (`tensorflow/core/protobuf/tensor_bundle.proto`): key ""
  holds a BundleHeaderProto (num_shards, endianness, version); every other key is a tensor
  name whose BundleEntryProto gives dtype, shape, shard_id, offset, size, crc32c and slices.
* `PREFIX.data-{shard:05d}-of-{num_shards:05d}` holds the raw little-endian tensor bytes.

What is read: float32/64, float16, bfloat16 (returned as float32), int8/16/32/64, uint8 and
bool tensors, as numpy arrays keyed by variable name. Tensors of any other dtype (DT_STRING
bookkeeping, complex, resources) and partitioned variables (entries made of slices) are
skipped rather than failing the load: a BERT checkpoint needs only its float and step tensors.
Every block's and every tensor's crc32c is checked, so a corrupted download fails loudly instead
of loading noise. A Python byte loop would take minutes for bert-base; the numpy version in
`_crc32c` reads and checks bert-base's 440 MB in about 1.5 s on one core.

Every problem (missing file, truncated or corrupted index or data, size mismatch) raises
BertkitError with one sentence naming the file.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import numpy as np

from ..errors import BertkitError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked crc32c

# TF DataType enum (tensorflow/core/framework/types.proto) -> little-endian storage dtype.
STORED_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL, one byte per element
    14: np.dtype("<u2"),  # DT_BFLOAT16: the top 16 bits of a float32
    19: np.dtype("<f2"),  # DT_HALF
}
DT_BFLOAT16 = 14


def read_tf_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """All readable tensors of a TF checkpoint, by variable name (e.g. 'bert/pooler/dense/kernel').

    `path` is the checkpoint prefix (`dir/bert_model.ckpt`), its `.index` or a `.data-*` file, or
    a directory holding the checkpoint (see `find_tf_checkpoint`). Arrays are copies, not views of
    the files; tensors of unsupported dtypes are left out (see the module docstring).
    """
    prefix = _resolve_prefix(Path(path))
    index_path = Path(f"{prefix}.index")
    header, entries = _read_index(index_path)
    shards = _open_shards(prefix, header.get(1, [1])[0])
    tensors = {}
    for name, entry in entries.items():
        array = _read_tensor(name, entry, shards)
        if array is not None:
            tensors[name] = array
    return tensors


def find_tf_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint prefix in `directory`, or None if it holds no `*.index` file.

    With several checkpoints (a training run's `model.ckpt-N`), the one the `checkpoint`
    state file names wins, else the highest step.
    """
    directory = Path(directory)
    prefixes = sorted(p.with_suffix("") for p in directory.glob("*.index"))
    if len(prefixes) <= 1:
        return prefixes[0] if prefixes else None
    named = _prefix_from_state_file(directory)
    if named is not None and named in prefixes:
        return named
    stepped = [p for p in prefixes if re.search(r"-\d+$", p.name)]
    if not stepped:
        names = ", ".join(p.name for p in prefixes)
        raise BertkitError(f"Directory {directory} holds several TF checkpoints ({names}); pass one prefix.")
    return max(stepped, key=lambda p: int(p.name.rsplit("-", 1)[1]))


def _prefix_from_state_file(directory: Path) -> Path | None:
    """The prefix in the `model_checkpoint_path: "..."` line TF's Saver writes to `checkpoint`."""
    state = directory / "checkpoint"
    if not state.is_file():
        return None
    match = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(errors="replace"), re.M)
    if match is None:
        return None
    # The path may be absolute and stale (the directory was moved): only its name is trusted.
    return directory / Path(match.group(1)).name


def _resolve_prefix(path: Path) -> Path:
    """The checkpoint prefix that `path` (prefix, index, data shard or directory) names."""
    if path.is_dir():
        prefix = find_tf_checkpoint(path)
        if prefix is None:
            raise BertkitError(f"Directory {path} holds no TF checkpoint (no *.index file).")
        return prefix
    if path.suffix == ".index":
        path = path.with_suffix("")
    else:
        # A data shard's name also identifies the checkpoint: strip ".data-00000-of-00001".
        path = path.with_name(re.sub(r"\.data-\d{5}-of-\d{5}$", "", path.name))
    if not Path(f"{path}.index").is_file():
        raise BertkitError(f"TF checkpoint index file {path}.index does not exist.")
    return path


# --- protobuf wire format -------------------------------------------------------------------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; returns (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _parse_proto(buf: bytes) -> dict[int, list[int | bytes]]:
    """Decode one protobuf message into field number -> values (ints, or bytes for strings and
    sub-messages). Schemas are applied by the caller, which knows what each field number means."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        wire_type = tag & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type in (1, 5):  # fixed64 / fixed32, little-endian
            width = 8 if wire_type == 1 else 4
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(buf):
            raise ValueError("truncated protobuf field")
        fields.setdefault(tag >> 3, []).append(value)
    return fields


def _shape(shape_proto: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated field 2 is a Dim message whose field 1 is the size."""
    dims = _parse_proto(shape_proto).get(2, [])
    return tuple(_parse_proto(dim).get(1, [0])[0] for dim in dims)


# --- SSTable ----------------------------------------------------------------------------------


def _read_index(index_path: Path) -> tuple[dict[int, list], dict[str, dict[int, list]]]:
    """Parse the `.index` table into (header proto fields, tensor name -> entry proto fields)."""
    data = index_path.read_bytes()
    try:
        records = _table_records(data)
        if b"" not in records:
            raise ValueError("it has no bundle header (the entry with the empty key)")
        header = _parse_proto(records.pop(b""))
        # Keys starting with NUL name the slices of partitioned variables, which are skipped.
        entries = {k.decode("utf-8"): _parse_proto(v) for k, v in records.items() if not k.startswith(b"\0")}
    except (ValueError, UnicodeDecodeError) as error:
        raise BertkitError(f"TF checkpoint index file {index_path} is corrupted or truncated: {error}.") from None
    if header.get(2, [0])[0] != 0:
        raise BertkitError(f"TF checkpoint index file {index_path} marks its data big-endian, which is not supported.")
    return header, entries


def _table_records(data: bytes) -> dict[bytes, bytes]:
    """Every key/value of the SSTable, following the footer to the index block to each data block."""
    if len(data) < FOOTER_SIZE:
        raise ValueError(f"file is {len(data)} bytes, shorter than the {FOOTER_SIZE}-byte footer")
    footer = data[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise ValueError("bad table magic number in the footer")
    _metaindex_offset, pos = _read_varint(footer, 0)  # TF leaves the metaindex block empty
    _metaindex_size, pos = _read_varint(footer, pos)
    index_offset, pos = _read_varint(footer, pos)
    index_size, _ = _read_varint(footer, pos)
    records = {}
    for _separator, handle in _block_entries(data, index_offset, index_size):
        offset, pos = _read_varint(handle, 0)
        size, _ = _read_varint(handle, pos)
        records.update(_block_entries(data, offset, size))
    return records


def _block_entries(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """Decode one block: check its trailer, then undo the shared-prefix key compression."""
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE or size < 4:
        raise ValueError(f"block at bytes {offset}..{end} lies outside the file")
    block, compression = data[offset:end], data[end]
    if compression != 0:
        # TF writes checkpoint indexes uncompressed, so this reader carries no snappy decoder.
        raise ValueError(f"block at byte {offset} is compressed (type {compression}), which is not supported")
    stored_crc = int.from_bytes(data[end + 1 : end + 5], "little")
    if masked_crc32c(data[offset : end + 1]) != stored_crc:  # the crc covers the type byte too
        raise ValueError(f"block at byte {offset} fails its crc32c check")
    num_restarts = int.from_bytes(block[-4:], "little")
    entries_end = size - 4 - 4 * num_restarts  # the restart array only speeds up seeks
    if entries_end < 0:
        raise ValueError(f"block at byte {offset} has a bad restart count")
    entries, key, pos = [], b"", 0
    while pos < entries_end:
        shared, pos = _read_varint(block, pos)
        non_shared, pos = _read_varint(block, pos)
        value_length, pos = _read_varint(block, pos)
        if shared > len(key) or pos + non_shared + value_length > entries_end:
            raise ValueError(f"block at byte {offset} has a malformed entry")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos : pos + value_length]))
        pos += value_length
    return entries


# --- tensor data --------------------------------------------------------------------------------


def _open_shards(prefix: Path, num_shards: int) -> list[tuple[Path, np.ndarray]]:
    """Memory-map every data shard, so each tensor's bytes are read from disk once."""
    shards = []
    for shard in range(num_shards):
        shard_path = Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")
        if not shard_path.is_file():
            raise BertkitError(f"TF checkpoint data file {shard_path} does not exist.")
        # np.memmap refuses empty files; a checkpoint of empty tensors has one.
        size = shard_path.stat().st_size
        mapped = np.memmap(shard_path, mode="r") if size else np.zeros(0, np.uint8)
        shards.append((shard_path, mapped))
    return shards


def _read_tensor(name: str, entry: dict[int, list], shards: list[tuple[Path, np.ndarray]]) -> np.ndarray | None:
    """The tensor an entry describes, or None for dtypes and layouts this reader skips."""
    tf_dtype = entry.get(1, [0])[0]
    if tf_dtype not in STORED_DTYPES or 7 in entry:  # field 7: slices of a partitioned variable
        return None
    dtype = STORED_DTYPES[tf_dtype]
    shape = _shape(entry.get(2, [b""])[0])
    shard_id, offset, size = (entry.get(field, [0])[0] for field in (3, 4, 5))
    if shard_id >= len(shards):
        raise BertkitError(f"TF checkpoint entry '{name}' points to data shard {shard_id}, which does not exist.")
    shard_path, mapped = shards[shard_id]
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise BertkitError(
            f"TF checkpoint data file {shard_path}: tensor '{name}' of shape {list(shape)} "
            f"needs {expected} bytes but its index entry says {size}."
        )
    if offset + size > mapped.size:
        raise BertkitError(
            f"TF checkpoint data file {shard_path} is {mapped.size} bytes but tensor '{name}' "
            f"needs bytes {offset}..{offset + size}."
        )
    raw = mapped[offset : offset + size]
    if 6 in entry and masked_crc32c(raw) != entry[6][0]:
        raise BertkitError(f"TF checkpoint data file {shard_path} is corrupted: tensor '{name}' fails its crc32c.")
    return _decode(raw, tf_dtype, shape)


def _decode(raw: np.ndarray, tf_dtype: int, shape: tuple[int, ...]) -> np.ndarray:
    """Copy raw bytes out of the memory map into a native-endian array of `shape`."""
    dtype = STORED_DTYPES[tf_dtype]
    values = raw.view(dtype).reshape(shape)
    if tf_dtype == DT_BFLOAT16:
        # bfloat16 is float32 with the low 16 mantissa bits dropped: shift them back in.
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(dtype.newbyteorder("="))


# --- crc32c -------------------------------------------------------------------------------------

CRC32C_POLY = 0x82F63B78  # Castagnoli polynomial, bit-reversed as the byte-wise algorithm uses it


def _crc_byte_table() -> list[int]:
    """The classic table: entry b is the crc register after shifting byte b through it."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


def _crc_word_tables(byte_table: list[int]) -> list[np.ndarray]:
    """Slicing-by-4: table k advances a crc over one byte followed by k zero bytes, so four
    lookups advance it over a whole little-endian 32-bit word."""
    tables = [np.array(byte_table, dtype=np.uint32)]
    for _ in range(3):
        tables.append((tables[-1] >> 8) ^ tables[0][tables[-1] & 0xFF])
    return tables


CRC_TABLE = _crc_byte_table()
CRC_WORD_TABLES = _crc_word_tables(CRC_TABLE)
LANES_MAX = 1 << 16  # enough parallel chunks to amortise numpy's per-call cost on big inputs


def masked_crc32c(data: bytes | np.ndarray) -> int:
    """The crc32c as TF stores it: rotated and offset, so a crc of data holding crcs stays robust."""
    crc = _crc32c(np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _crc32c(data: np.ndarray) -> int:
    """Standard crc32c (start and final xor 0xFFFFFFFF) of a uint8 array.

    A byte loop in Python would take minutes for bert-base. Instead the input is cut into up to
    65536 equal chunks whose raw crcs (start 0) advance together, one numpy step per 4-byte
    column, and are then merged pairwise: raw(A + B) = zeros_operator(len B)(raw(A)) ^ raw(B),
    since a crc is linear over GF(2). About 0.3 s per 100 MB.
    """
    size = data.size
    if size < 4096:
        crc = 0xFFFFFFFF
        for byte in data.tobytes():
            crc = CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF
    # Lanes cost a merge step each, columns a loop step: about sqrt(32 * size) lanes balances the
    # two. A power of two, so the merge halves evenly.
    lanes = min(LANES_MAX, 1 << (math.isqrt(32 * size).bit_length() - 1))
    chunk = -(-size // (4 * lanes)) * 4
    padded = np.zeros(lanes * chunk, dtype=np.uint8)
    padded[-size:] = data  # leading zero bytes leave a raw crc (start 0) unchanged
    padded[-size : -size + 4] ^= 0xFF  # starting from 0xFFFFFFFF = xoring the first 4 bytes with it
    words = padded.view("<u4").reshape(lanes, chunk // 4)
    table0, table1, table2, table3 = CRC_WORD_TABLES
    crcs = np.zeros(lanes, dtype=np.uint32)
    for j in range(chunk // 4):
        x = crcs ^ words[:, j]
        crcs = table3[x & 0xFF] ^ table2[(x >> 8) & 0xFF] ^ table1[(x >> 16) & 0xFF] ^ table0[x >> 24]
    while crcs.size > 1:
        crcs = _apply(_zeros_operator(chunk), crcs[0::2]) ^ crcs[1::2]
        chunk *= 2
    return int(crcs[0]) ^ 0xFFFFFFFF


@functools.cache
def _zeros_operator(nbytes: int) -> np.ndarray:
    """The 32x32 GF(2) matrix, as 32 column words, that advances a raw crc over `nbytes` zero bytes."""
    if nbytes == 1:
        return np.array([CRC_TABLE[(1 << bit) & 0xFF] ^ ((1 << bit) >> 8) for bit in range(32)], dtype=np.uint32)
    half = _zeros_operator(nbytes // 2)
    operator = _apply(half, half)  # the columns of A∘B are A applied to the columns of B
    return _apply(_zeros_operator(1), operator) if nbytes % 2 else operator


def _apply(operator: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Multiply every 32-bit word in `words` by the GF(2) matrix `operator`."""
    result = np.zeros_like(words)
    for bit in range(32):
        result ^= np.where((words >> np.uint32(bit)) & np.uint32(1), operator[bit], np.uint32(0))
    return result
