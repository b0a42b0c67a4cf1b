import hashlib

import numpy as np
import pytest
import torch

from ddcs_core import hashing as H

# Digests written by the helpers these functions replaced (pairwise.content_hash, train_gan._fingerprint,
# train_classifier._fingerprint, attacks.fingerprint.array_digest / module_digest), computed before the move.
# They are stored in manifests, resume signatures and cache keys, so they must never change.
SMALL = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
LABELS = np.array([0, 1], np.int64)
KNOWN = {
    H.HEAD_DTYPE_SHAPE: ((SMALL,), "3071ac54b4a84fb3865a7c009174e7d10aa290679cfc11c0340897d82a33aed0"),
    H.HEAD_SHAPE: ((SMALL,), "bdbad8a0754af78aea1e3579838bc6165f6e32ce3b90011e7660c5db57dfcca1"),
    H.HEAD_TUPLE: ((SMALL, LABELS), "0013cce1e65ef39b91616db59769a3e1cdefffe34e88554ca7a59aa663348081"),
}


def test_file_digest_is_hashlibs_across_block_boundaries(tmp_path):
    for size in (0, 3, H.CHUNK, H.CHUNK + 7):
        data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        assert H.sha256_file(path) == hashlib.sha256(data).hexdigest() == H.sha256_bytes(data)
    (tmp_path / "abc").write_bytes(b"abc")
    assert H.sha256_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("head", list(KNOWN))
def test_array_layouts_keep_their_stored_digests(head):
    arrays, expected = KNOWN[head]
    assert H.arrays_sha256(*arrays, head=head) == expected


def test_short_array_digest_keeps_its_stored_value():
    assert H.array_digest(SMALL) == "7a2bc60dc0a6f896"


def test_array_digest_is_stable_for_equal_arrays_and_differs_otherwise():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    same = a.copy()
    view = np.asfortranarray(a)  # same values, other memory order
    assert H.array_digest(a) == H.array_digest(same) == H.array_digest(view)
    others = [a.astype(np.int16), a.reshape(3, 2, 4), a.reshape(6, 4), np.where(a == 5, 6, a).astype(np.uint8)]
    digests = {H.array_digest(o) for o in others} | {H.array_digest(a)}
    assert len(digests) == len(others) + 1
    for head in KNOWN:
        assert H.arrays_sha256(a, head=head) == H.arrays_sha256(same, head=head)
        assert H.arrays_sha256(a, head=head) != H.arrays_sha256(a.reshape(6, 4), head=head)


def test_module_digest_depends_on_values_not_dtype_or_layout():
    m = torch.nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, -2.0]]))
        m.bias.fill_(0.5)
    assert H.module_digest(m) == "c76cc2aa352af3f0"
    assert H.module_digest(m.double()) == "c76cc2aa352af3f0"  # values are hashed as float32
    with torch.no_grad():
        m.bias.fill_(0.25)
    assert H.module_digest(m) != "c76cc2aa352af3f0"


def test_row_digests_equal_for_equal_rows():
    rows = np.array([[1, 2], [3, 4], [1, 2]], np.uint8)
    d = H.row_digests(rows)
    assert d.dtype == np.int64 and d[0] == d[2] != d[1]
