"""Record schema: byte round trip, and validation errors that say what was expected."""

import msgpack
import numpy as np
import pytest

from data_helpers import fake_example
from omnijax.data import schema


def test_round_trip_is_exact_for_every_dtype():
    ex = fake_example(3, 9, 32, 48, audio_ok=False)
    ex["keypoints"][2, 3] = (0.123, 0.456, 0.0)
    back = schema.decode(schema.encode(ex))
    assert back.keys() == ex.keys()
    for k in ex:
        assert back[k].dtype == ex[k].dtype and back[k].shape == ex[k].shape, k
        np.testing.assert_array_equal(back[k], ex[k])
    assert back["audio_ok"].shape == () and not back["audio_ok"]
    back["latents"][0] = 1.0  # decoded arrays are writable copies


def test_validation_names_the_problem():
    ex = fake_example(0, 9, 32, 32)
    dims = schema.validate(ex)
    assert (dims["F"], dims["T"], dims["h"], dims["w"], dims["z"]) == (3, 9, 4, 4, 16)
    bad = dict(ex, audio=ex["audio"][:5])
    with pytest.raises(ValueError, match="T="):
        schema.validate(bad)
    with pytest.raises(ValueError, match="keypoints must be float32"):
        schema.validate(dict(ex, keypoints=ex["keypoints"].astype(np.float16)))
    with pytest.raises(ValueError, match=r"keypoints must have shape \('T', 13, 3\)"):
        schema.validate(dict(ex, keypoints=ex["keypoints"][:, :10]))
    with pytest.raises(ValueError, match=r"missing keys \['keypoints'\], unexpected keys \['pose'\]"):
        schema.validate({**{k: v for k, v in ex.items() if k != "keypoints"},   # a schema-1 example
                         "pose": np.zeros((9, 16, 16, 13), np.float16)})
    with pytest.raises(ValueError, match=r"missing keys \['text'\]"):
        schema.validate({k: v for k, v in ex.items() if k != "text"})
    with pytest.raises(ValueError, match="ref_latent has h=2"):
        schema.validate(dict(ex, ref_latent=np.zeros((1, 2, 4, 16), np.float32)))
    with pytest.raises(ValueError, match="1 \\+ 4\\(F-1\\)"):
        schema.validate(dict(ex, latents=np.zeros((2, 4, 4, 16), np.float32)))


def test_corrupt_and_foreign_records_fail_clearly():
    with pytest.raises(ValueError, match="not a valid msgpack example"):
        schema.decode(b"\xc1\xff\x00")
    with pytest.raises(ValueError, match="schema version"):
        schema.decode(msgpack.packb({"v": 99, "features": {}}))


def test_bucket_names():
    assert schema.bucket_name(17, 64, 96) == "t17_h64_w96"
    assert schema.parse_bucket("t17_h64_w96") == schema.parse_bucket("17x64x96") == (17, 64, 96)
    for bad, msg in (("17x64", "FRAMESxHEIGHTxWIDTH"), ("16x64x64", "1 \\+ 4k"), ("17x60x64", "multiples of 16")):
        with pytest.raises(ValueError, match=msg):
            schema.parse_bucket(bad)
