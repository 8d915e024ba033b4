"""The recipe's ``report`` stage: ``report.rst``, the research notes' tables written from the
stages' records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from instructedit.worlds.recipe._config import STAGES, RecipeConfig
from instructedit.worlds.recipe._guidance import grid_edges

__all__ = ["edges_note"]


def _percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An RST list-table."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(lines) + "\n"


def _method_row(name: str, scores: dict[str, Any]) -> list[str]:
    from instructedit.worlds.shapes import EDIT_FAMILIES

    oracle, clip = scores["oracle"], scores["clip"]
    return [
        name,
        *(_percent(oracle[f]["realised"]) if f in oracle else "–" for f in EDIT_FAMILIES),
        _percent(oracle["all"]["success"]),
        # A record whose oracle did not read the kept regions has no "intact".
        _percent(oracle["all"]["intact"]) if "intact" in oracle["all"] else "–",
        f"{oracle['all']['unchanged_error']:.3f}",
        f"{clip['direction_similarity']:.3f}",
        f"{clip['image_similarity']:.3f}",
    ]


_METHOD_HEADER = [
    "model",
    "recolour",
    "background",
    "add",
    "remove",
    "success (all)",
    "rest intact",
    "unchanged MAE",
    "CLIP direction",
    "CLIP image",
]


def edges_note(guidance: dict[str, Any]) -> str:
    """The report's note of a guidance choice on the grid's edge, from the ``guidance`` stage's
    record (its ``edges``, or recomputed from its grid when the record has none); ``""`` when
    the choice is not on the edge."""
    grid = guidance["grid"]
    edges = guidance.get("edges")
    if edges is None:
        edges = grid_edges(
            guidance["text_scale"],
            guidance["image_scale"],
            [row["text_scale"] for row in grid],
            [row["image_scale"] for row in grid],
        )
    return f"; on the grid's edge: {'; '.join(edges)}" if edges else ""


def _stage_report(config: RecipeConfig, folder: Path, progress: bool) -> dict[str, Any]:
    """Writes ``report.rst``: every table of the research notes, from the stages' records."""
    root = folder.parent
    records = {
        stage: json.loads((root / stage / "DONE.json").read_text(encoding="utf-8"))
        for stage in STAGES[:-1]
    }
    evaluation, ablations, pairs = records["evaluate"], records["ablations"], records["pairs"]
    # An evaluation record without "guidance" was made at the paper's guidance.
    from instructedit.guidance import DualGuidance

    paper = DualGuidance()
    evaluated = evaluation.get(
        "guidance", {"text_scale": paper.text_scale, "image_scale": paper.image_scale}
    )
    parts = [
        "Stage times (seconds)\n\n",
        _table(
            ["stage", "seconds"],
            [[stage, f"{record['seconds']:.0f}"] for stage, record in records.items()],
        ),
        "\nPairs\n\n",
        _table(
            ["candidates", "filter verdicts", "filtered", "unfiltered", "fewer"],
            [
                [
                    str(pairs["candidates"]),
                    ", ".join(f"{k}: {v}" for k, v in sorted(pairs["filter"].items())),
                    str(pairs["filtered_pairs"]),
                    str(pairs["unfiltered_pairs"]),
                    str(pairs["fewer_pairs"]),
                ]
            ],
        ),
        "\nPairs read back (share of each set; colours, layout, both)\n\n",
        _table(
            ["set", "family", "pairs", "input shown", "edited shown", "layout kept", "correct"],
            [
                [
                    name,
                    family,
                    str(row["count"]),
                    *(
                        _percent(row[key])
                        for key in ("input_shown", "edited_shown", "layout_kept", "correct")
                    ),
                ]
                for name, families in pairs.get("read_back", {}).items()
                for family, row in families.items()
            ],
        ),
        f"\nGuidance chosen on {records['guidance']['scenes']} validation edits (seed "
        f"{records['guidance']['seed']}): s_T {records['guidance']['text_scale']:g}, "
        f"s_I {records['guidance']['image_scale']:g}; the held-out edits below were made at "
        f"s_T {evaluated['text_scale']:g}, s_I {evaluated['image_scale']:g}"
        + edges_note(records["guidance"])
        + "\n\n",
        _table(
            ["s_T", "s_I", "success (all)", "rest intact", "unchanged MAE"],
            [
                [
                    f"{row['text_scale']:g}",
                    f"{row['image_scale']:g}",
                    _percent(row["oracle"]["all"]["success"]),
                    _percent(row["oracle"]["all"]["intact"]),
                    f"{row['oracle']['all']['unchanged_error']:.3f}",
                ]
                for row in records["guidance"]["grid"]
            ],
        ),
        f"\nHeld-out edits ({config.eval_scenes} rendered scenes, realised per family)\n\n",
        _table(
            _METHOD_HEADER,
            [_method_row(name, scores) for name, scores in evaluation["methods"].items()],
        ),
        f"\nAblations ({ablations['steps']} training steps each)\n\n",
        _table(
            [*_METHOD_HEADER, "pairs"],
            [
                [*_method_row(name, run), str(run["examples"])]
                for name, run in ablations["runs"].items()
            ],
        ),
        f"\nGuidance sweep (s_T = {config.text_scale:g})\n\n",
        _table(
            ["s_I", "CLIP direction", "CLIP image"],
            [
                [
                    f"{point['image_scale']:g}",
                    f"{point['direction_similarity']:.3f}",
                    f"{point['image_similarity']:.3f}",
                ]
                for point in evaluation["sweep"]
            ],
        ),
    ]
    report = folder / "report.rst"
    report.write_text("".join(parts), encoding="utf-8")
    return {"report": str(report)}
