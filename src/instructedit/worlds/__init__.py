"""Procedural worlds where every stage of the paper can be checked against ground truth."""
