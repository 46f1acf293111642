"""Checks shared by the tests of builds that hand bnhw's IR to FINN (NAS-BNN and cell networks)."""

from __future__ import annotations

import json
from pathlib import Path


def assert_finn_took_bnhws_folding_and_model(out: Path, final, finn_report: dict) -> dict:
    """FINN applied bnhw's folding config node by node, per node FINN's estimate equals bnhw's model (cycles,
    BRAM18, LUT), and FINN's II over every node is the build's.  Returns the folding config."""
    from qonnx.custom_op.registry import getCustomOp

    ours = json.loads((out / "finn" / "folding_config.json").read_text())
    inst = {n.name: getCustomOp(n) for n in final.graph.node}
    for k, attrs in ours.items():
        if k != "Defaults":
            assert all(inst[k].get_nodeattr(a) == v for a, v in attrs.items()), (k, attrs)
    cmp = finn_report["comparison"]
    assert len(cmp) == len(final.graph.node)
    for c in cmp:
        assert c["finn_cycles"] == c["bnhw_cycles"] and c["finn_BRAM18"] == c["bnhw_BRAM18"], c
        assert abs(c["finn_LUT"] - c["bnhw_LUT"]) < 0.5, c
    perf = json.loads((out / "report.json").read_text())["performance"]
    assert finn_report["network"]["max_cycles"] == perf["ii_cycles"]
    return ours
