"""Cycle-level simulator of the folded dataflow accelerator (see :mod:`.netlist`, :mod:`.simulate`)."""
