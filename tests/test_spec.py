"""The architecture spec: round trips and one clear error per malformed field."""

import json
import re

import pytest

from bnhw.errors import BnhwError, SpecError
from bnhw.spec import ArchSpec, load_spec
from bnhw.spec.zoo import ARCHS, get_arch


def _base() -> dict:
    return get_arch("nasbnn-cifar-smallest").to_dict()


@pytest.mark.parametrize("name", list(ARCHS))
def test_zoo_round_trip(name, tmp_path):
    spec = get_arch(name)
    path = spec.save(tmp_path / "a.json")
    again = load_spec(path)
    assert again == spec
    assert hash(again) == hash(spec)
    assert json.loads(path.read_text())["version"] == 1


def test_bundled_examples_match_zoo():
    from pathlib import Path

    ex = Path(__file__).parent.parent / "examples"
    files = sorted(ex.glob("*.json"))
    assert files, "examples/ must ship spec files"
    for f in files:
        spec = load_spec(f)
        if spec.name in ARCHS:
            assert spec == get_arch(spec.name), f.name


def _mutate(d, path, value):
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


@pytest.mark.parametrize("path,value,field,words", [
    (("stages", 1, "blocks", 0, "foo"), 3, "stages[1].blocks[0].foo", "unknown key"),
    (("bogus",), 1, "bogus", "unknown key"),
    (("stem", "chanels"), 3, "stem.chanels", "unknown key"),
    (("stages", 2, "blocks", 1, "groups"), 5, "stages[2].blocks[1].groups", "not divisible"),
    (("stages", 0, "blocks", 0, "channels"), -4, "stages[0].blocks[0].channels", ">= 1"),
    (("resolution",), 0, "resolution", ">= 1"),
    (("num_classes",), "ten", "num_classes", "integer"),
    (("stages", 0, "blocks", 0, "kernel"), 4, "stages[0].blocks[0].kernel", "odd"),
    (("stages", 0, "blocks", 0, "stride"), 3, "stages[0].blocks[0].stride", "1 or 2"),
    (("stem", "channels"), KeyError, "stem.channels", "missing"),
    (("precision", "residual"), "int", "precision.residual", "expected one of"),
    (("precision", "residual_frac_bits"), 16, "precision.residual_frac_bits", "< residual_bits"),
])
def test_invalid_fields_are_named(path, value, field, words):
    d = _mutate(_base(), path, value)
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict(d)
    assert e.value.field == field
    assert words in str(e.value)
    assert str(e.value).startswith(field)
    assert "\n" not in str(e.value)


def test_stage_deeper_than_space_allows():
    d = _base()
    blocks = d["stages"][3]["blocks"]
    blocks.extend([dict(blocks[-1], stride=1)] * (10 - len(blocks)))
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict(d)
    assert e.value.field == "stages[3].blocks"
    assert "deeper than the space allows" in str(e.value)
    # the same network outside any space is structurally fine
    d["space"] = None
    assert ArchSpec.from_dict(d).depths[3] == 10


def test_space_membership_errors():
    d = _base()
    d["stages"][1]["blocks"][1]["channels"] = 32   # 24 -> 32 keeps widths non-decreasing
    ArchSpec.from_dict(d)
    d["stages"][1]["blocks"][0]["channels"] = 48
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict(d)
    assert e.value.field == "stages[1].blocks[1].channels"
    assert "Non-Decreasing" in str(e.value)
    d = _base()
    d["stages"][0]["blocks"][0]["channels"] = 20
    with pytest.raises(SpecError, match=r"stages\[0\]\.blocks\[0\]\.channels: 20 not in"):
        ArchSpec.from_dict(d)
    d = _base()
    d["space"] = "nope"
    with pytest.raises(BnhwError, match="unknown search space 'nope'"):
        ArchSpec.from_dict(d)


def test_odd_size_before_stride_two():
    d = _base()
    d["space"] = None
    d["resolution"] = 30  # 30 -> 30 -> 15 at the S3 stride: odd
    with pytest.raises(SpecError, match=r"stages\[2\]\.blocks\[0\]\.stride: input size 15x15 is odd"):
        ArchSpec.from_dict(d)


def test_bad_json_and_missing_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(p)
    with pytest.raises(BnhwError, match="no such file"):
        load_spec(tmp_path / "missing.json")


def test_geometry_of_nasbnn_d():
    spec = get_arch("nasbnn-d")
    geo = list(spec.blocks())
    assert len(geo) == 2 + 2 + 3 + 8 + 3
    assert [g.in_size for g in geo if g.index == 0] == [112, 112, 56, 28, 14]
    assert spec.final_size == 7 and spec.final_channels == 1536
    assert geo[2].in_channels == 96 and geo[2].block.groups == 2
    assert spec.widths()[0] == 48


@pytest.mark.parametrize("changes,field,words", [
    ({"residual_bits": 24}, "precision.residual_bits", "at most 23"),
    ({"bn_frac_bits": 9}, "precision.bn_frac_bits", "residual_frac_bits + 2"),
    ({"bn_frac_bits": 16}, "precision.bn_frac_bits", "<= 22"),
    ({"slope_frac_bits": 9}, "precision.slope_frac_bits", "<= 24"),
])
def test_fixed_point_precision_limits(changes, field, words):
    """Fixed mode checks the float32-exactness conditions of its dyadic constants; float mode does not."""
    from bnhw.spec import Precision

    with pytest.raises(SpecError, match=re.escape(words)) as ei:
        Precision.from_dict({"residual": "fixed", **changes})
    assert ei.value.field == field
    assert Precision.from_dict({"residual": "float", **changes}).residual == "float"
    assert Precision.from_dict({"residual": "fixed"}).to_dict()["bn_frac_bits"] == 12
