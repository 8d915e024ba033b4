"""The web page (Gradio): ``instructedit app``."""

import logging
import os
import random
from typing import Any

import numpy as np
from PIL import Image

from instructedit.app._editor import (
    MASK_CHOICES,
    SCHEDULER_CHOICES,
    STORED_SCHEDULER,
    AppEditor,
    AppTurn,
)
from instructedit.pipeline import SPEED_PRESETS

__all__ = ["build_app", "run_app"]

logger = logging.getLogger(__name__)

FIX_SEED, RANDOM_SEED = "Fix seed", "Randomize seed"
FIX_GUIDANCE, RANDOM_GUIDANCE = "Fix guidance", "Randomize guidance"


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as error:  # the optional extra
        raise ImportError(
            "instructedit app needs Gradio: pip install 'instructedit[app]'"
        ) from error
    return gradio


def _editor_value(editor: AppEditor, turn: AppTurn) -> dict[str, Any]:
    """A turn as the input's value: its image shown enlarged, no strokes."""
    shown = editor.display(turn.image)
    return {"background": shown, "layers": [], "composite": shown}


def _gallery(editor: AppEditor, turns: list[AppTurn]) -> list[tuple[Image.Image, str]]:
    return [(editor.display(turn.image), turn.caption) for turn in turns]


def _same_image(a: Image.Image, b: Image.Image) -> bool:
    """Whether the page still shows turn image ``b`` (up to the browser's re-encoding)."""
    if a.size != b.size:
        return False
    difference = np.abs(
        np.asarray(a.convert("RGB"), np.int16) - np.asarray(b.convert("RGB"), np.int16)
    )
    return float(difference.mean()) <= 1.0


def build_app(editor: AppEditor) -> Any:
    """The page for ``editor``: a ``gradio.Blocks`` (launch it, or mount it in your own app).

    The input (upload, paste, or a bundled scene for the embedded default) sits beside the
    output under **Edited**; **Edit** runs the instruction; **Edit the result** continues from
    the output; the turns so far are a gallery to go back to; on a ShapesWorld scene the oracle
    judges each edit. Errors show as messages on the page.
    """
    gr = _gradio()
    from gradio import SelectData

    from instructedit.demo import DEFAULT_SUCCESS, DEMO_EDITS, DEMO_SCENE

    bundled = {"a red circle and a white square on yellow": DEMO_SCENE}
    bundled.update({f"the scene of {instruction!r}": scene for scene, instruction in DEMO_EDITS})
    first = editor.scene_turn(DEMO_SCENE) if editor.shapes else None
    stored = editor.pipe.guidance
    about = f"Model: **{editor.name}**, edits at {editor.working_side} pixels on the long side." + (
        " The embedded ShapesWorld editor: it recolours shapes, changes backgrounds, adds "
        f"and removes shapes in 32×32 scenes, and succeeds in {100 * DEFAULT_SUCCESS[0]:.1f} % "
        "of 200 held-out edits; "
        "on a bundled scene the oracle judges each edit."
        if editor.shapes
        else ""
    )

    with gr.Blocks(title="instructedit", analytics_enabled=False) as page:
        gr.Markdown(f"# instructedit: edit an image by telling it what to change\n{about}")
        turns_state = gr.State([] if first is None else [first])
        current_state = gr.State(first)
        result_state = gr.State(None)
        with gr.Row():
            with gr.Column():
                source = gr.ImageEditor(
                    value=None if first is None else _editor_value(editor, first),
                    label="Input",
                    type="pil",
                    image_mode="RGB",
                    sources=["upload", "clipboard"],
                    brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"),
                    layers=gr.LayerOptions(allow_additional_layers=False, layers=["mask"]),
                    transforms=(),
                    format="png",
                    elem_id="input-image",
                )
                if editor.shapes:
                    with gr.Row():
                        scene_choice = gr.Dropdown(
                            list(bundled),
                            value=next(iter(bundled)),
                            label="Bundled scene",
                            elem_id="scene-choice",
                        )
                        new_scene = gr.Button("New scene", elem_id="new-scene")
            with gr.Column():
                edited = gr.Image(
                    label="Edited", type="pil", interactive=False, elem_id="edited", format="png"
                )
                verdict = gr.Markdown(elem_id="verdict")
                continue_button = gr.Button("Edit the result", elem_id="continue")
        with gr.Row():
            instruction = gr.Textbox(
                label="Instruction",
                placeholder="make the circle blue" if editor.shapes else "make it snowy",
                elem_id="instruction",
                scale=4,
            )
            edit_button = gr.Button("Edit", variant="primary", elem_id="edit-button", scale=1)
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                steps = gr.Slider(1, 100, value=20, step=1, label="Steps")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                seed_mode = gr.Radio([FIX_SEED, RANDOM_SEED], value=FIX_SEED, label="Seed mode")
            with gr.Row():
                text_scale = gr.Number(value=stored.text_scale, minimum=0, label="Text guidance")
                image_scale = gr.Number(value=stored.image_scale, minimum=0, label="Image guidance")
                guidance_mode = gr.Radio(
                    [FIX_GUIDANCE, RANDOM_GUIDANCE], value=FIX_GUIDANCE, label="Guidance mode"
                )
            with gr.Row():
                scheduler = gr.Dropdown(
                    list(SCHEDULER_CHOICES), value=STORED_SCHEDULER, label="Scheduler"
                )
                speed = gr.Radio(
                    list(SPEED_PRESETS),
                    value="exact",
                    label="Speed (feature caching: fast reuses the UNet's deep features)",
                )
                mask = gr.Radio(
                    list(MASK_CHOICES),
                    value=MASK_CHOICES[0],
                    label="Mask (draw on the input with the brush for 'drawn on the input')",
                )
        history = gr.Gallery(
            value=[] if first is None else _gallery(editor, [first]),
            label="Turns (click one to go back to it)",
            columns=8,
            fit_columns=False,
            height=160,
            object_fit="contain",
            allow_preview=False,
            elem_id="history",
        )

        def run_edit(
            value: Any,
            text: str,
            step_count: float,
            seed_value: float | None,
            seed_choice: str,
            text_value: float | None,
            image_value: float | None,
            guidance_choice: str,
            scheduler_name: str,
            mask_choice: str,
            speed_choice: str,
            current: AppTurn | None,
            turns: list[AppTurn],
            progress: Any = gr.Progress(),  # noqa: B008 - Gradio's way to ask for a progress bar
        ) -> tuple[Any, ...]:
            try:
                image, _ = editor.read_input(value)
                if current is None or not _same_image(image, current.image):
                    current = AppTurn(image)  # a new upload: a new history, no scene
                    turns = [current]
                if seed_choice == RANDOM_SEED:
                    seed_value = random.randrange(2**31)
                if guidance_choice == RANDOM_GUIDANCE:
                    text_value, image_value = editor.random_guidance()
                result = editor.edit(
                    value,
                    text,
                    steps=step_count,  # type: ignore[arg-type]
                    text_scale=text_value,
                    image_scale=image_value,
                    seed=0 if seed_value is None else seed_value,  # type: ignore[arg-type]
                    scheduler=scheduler_name,
                    mask=mask_choice,  # type: ignore[arg-type]
                    scene=current.scene,
                    speed=speed_choice,
                    progress=lambda done, total: progress((done, total), desc="editing"),
                )
            except ValueError as error:
                raise gr.Error(str(error), title="Cannot edit") from error
            except Exception as error:  # shown on the page, logged with its traceback
                logger.exception("the edit failed")
                raise gr.Error(f"The edit failed: {error}", title="Edit failed") from error
            if result.note is not None:
                gr.Info(result.note)
            turns = [*turns, result.turn]
            return (
                editor.display(result.turn.image),
                "" if result.turn.verdict is None else f"**Oracle**: {result.turn.verdict}",
                result.seed,
                result.text_scale,
                result.image_scale,
                _gallery(editor, turns),
                turns,
                current,
                result.turn,
            )

        edit_inputs = [
            source,
            instruction,
            steps,
            seed,
            seed_mode,
            text_scale,
            image_scale,
            guidance_mode,
            scheduler,
            mask,
            speed,
            current_state,
            turns_state,
        ]
        edit_outputs = [
            edited,
            verdict,
            seed,
            text_scale,
            image_scale,
            history,
            turns_state,
            current_state,
            result_state,
        ]
        edit_button.click(run_edit, edit_inputs, edit_outputs)
        instruction.submit(run_edit, edit_inputs, edit_outputs)

        def go_to(turn: AppTurn | None, turns: list[AppTurn]) -> tuple[Any, ...]:
            if turn is None:
                raise gr.Error("Edit first: there is no result to continue from yet")
            return _editor_value(editor, turn), turn, "", None

        continue_button.click(
            go_to, [result_state, turns_state], [source, current_state, instruction, edited]
        )

        def pick_turn(turns: list[AppTurn], event: SelectData) -> tuple[Any, ...]:
            index = event.index if isinstance(event.index, int) else event.index[0]
            return go_to(turns[index], turns)

        history.select(pick_turn, [turns_state], [source, current_state, instruction, edited])

        if editor.shapes:

            def start(turn: AppTurn) -> tuple[Any, ...]:
                return _editor_value(editor, turn), turn, [turn], _gallery(editor, [turn]), None, ""

            start_outputs = [source, current_state, turns_state, history, edited, verdict]
            scene_choice.input(
                lambda name: start(editor.scene_turn(bundled[name])), [scene_choice], start_outputs
            )
            new_scene.click(lambda: start(editor.new_scene()), [], start_outputs)
    return page


def run_app(
    *, model: str = "shapes", host: str = "127.0.0.1", port: int = 7860, device: str = "auto"
) -> None:
    """Serves a web page to edit images with an editor (Gradio; ``pip install
    'instructedit[app]'``), until interrupted.

    The model loads once; visitors' edits queue and run one at a time.

    Args:
        model: "shapes" (the embedded default, offline), a pipeline folder or a hub id.
        host: the address to listen on ("0.0.0.0" for every interface).
        port: the port to listen on.
        device: "auto" (CUDA when available), "cpu", "cuda", ...
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be from 1 to 65535, got {port}")
    gr = _gradio()
    editor = AppEditor.load(model, device=device)
    page = build_app(editor)
    page.queue(default_concurrency_limit=1)
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )
    logger.info("serving %s on http://%s:%d", model, host, port)
    page.launch(
        server_name=host,
        server_port=port,
        theme=theme,
        ssr_mode=False,
        max_file_size="50mb",
        show_error=True,
    )
