"""OPs estimator against the paper's numbers and a hand count; budget parsing."""

import pytest

from bnhw.errors import BudgetError
from bnhw.estimators.ops import count_ops, format_ops, ops_of, parse_budget
from bnhw.spec import ArchSpec
from bnhw.spec.zoo import get_arch


def test_nasbnn_smallest_is_about_20_8M():
    assert ops_of(get_arch("nasbnn-smallest")) == pytest.approx(20.8e6, rel=0.005)
    assert ops_of(get_arch("nasbnn-a")) == pytest.approx(21e6, rel=0.02)   # Table 6, column A


def test_nasbnn_d_is_124M_within_1_percent():
    assert ops_of(get_arch("nasbnn-d")) == pytest.approx(124e6, rel=0.01)


def test_hand_count_of_a_small_network():
    spec = ArchSpec.from_dict({
        "resolution": 8, "num_classes": 5, "in_channels": 3,
        "stem": {"channels": 4, "kernel": 3, "stride": 1},
        "stages": [{"blocks": [{"channels": 8, "kernel": 3, "groups": 2, "stride": 2},
                               {"channels": 8, "kernel": 5, "groups": 4}]}],
    })
    rep = count_ops(spec)
    by = {lo.name: lo for lo in rep.layers}
    assert by["stem"].int8ops == 9 * 3 * 4 * 8 * 8
    assert by["s1l1.conv3x3"].bops == 9 * (4 // 2) * 4 * 4 * 4      # k^2 (Cin/g) Cin Hout Wout
    assert by["s1l1.conv1x1"].bops == 4 * 8 * 4 * 4
    assert by["s1l2.conv5x5"].bops == 25 * (8 // 4) * 8 * 4 * 4
    assert by["s1l2.conv1x1"].bops == 8 * 8 * 4 * 4
    assert by["fc"].flops == (8 + 1) * 5
    assert rep.ops == pytest.approx(rep.flops + rep.bops / 64 + rep.int8ops / 8)
    assert rep.bops == sum(lo.bops for lo in rep.layers if lo.kind == "binary")


def test_ops_grow_with_width_and_kernel_and_shrink_with_groups():
    base = get_arch("nasbnn-cifar-smallest")
    b0 = base.stages[2].blocks[1]
    wider = base.replace(stages=base.stages[:2] + (base.stages[2].__class__(
        (base.stages[2].blocks[0], b0.__class__(channels=64, kernel=3, groups=4))),) + base.stages[3:])
    assert ops_of(wider) > ops_of(base)


@pytest.mark.parametrize("text,value", [
    ("57M", 57e6), ("57m", 57e6), ("1.2G", 1.2e9), ("57e6", 57e6), ("57000000", 57e6), ("500k", 5e5),
    (" 20.8M ", 20.8e6), (".5G", 5e8), (57e6, 57e6),
])
def test_parse_budget(text, value):
    assert parse_budget(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "57X", "M", "-5M", "0", "1.2.3M", "inf", "nan", "57 MB", "5e400"])
def test_parse_budget_rejects(text):
    with pytest.raises(BudgetError) as e:
        parse_budget(text)
    assert "budget" in str(e.value)


def test_format_ops():
    assert format_ops(20772760) == "20.77M"
    assert format_ops(1.2e9) == "1.20G"
    assert format_ops(512) == "512"
