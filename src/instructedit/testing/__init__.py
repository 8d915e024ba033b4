"""Tiny, seeded, offline components for tests — ours and yours.

Everything here builds locally in seconds on a CPU and never reaches a model hub:

* the real CLIP tokenizer, derived from the BPE vocabulary that open_clip ships
  (:func:`clip_tokenizer`);
* tiny Stable Diffusion parts in the diffusers layout, with a 4-channel (text-to-image) or
  8-channel (InstructPix2Pix) UNet (:func:`tiny_components`, :func:`save_tiny_pipeline`), and
  the same for Stable Diffusion XL's layout (:func:`tiny_sdxl_components`);
* a tiny open_clip model and its ``local-dir:`` folder (:func:`tiny_open_clip`,
  :func:`save_tiny_open_clip`);
* a tiny causal language model with a byte-level BPE tokenizer trained on the fly
  (:func:`tiny_causal_lm`), a local OpenAI-compatible chat server around any such model
  (:func:`serve_chat_model`), and a tiny image captioner (:func:`save_tiny_captioner`).

The same seed gives bit-identical weights, and building never disturbs the caller's random
state. Use it in downstream tests the way diffusers uses ``get_dummy_components()``::

    from instructedit.testing import tiny_components

    def test_my_pipeline():
        parts = tiny_components(seed=0)
        ...
"""

from instructedit._public import publish
from instructedit.clip import save_open_clip
from instructedit.clip_tokenizer import (
    CLIP_CONTEXT_LENGTH,
    CLIP_VOCAB_SIZE,
    clip_tokenizer,
    clip_tokenizer_dir,
)
from instructedit.components import SD_SCHEDULER_CONFIG, clip_text_encoder
from instructedit.seeding import seeded
from instructedit.testing._chat_server import ChatServer, serve_chat_model
from instructedit.testing._diffusion import (
    SchedulerName,
    TinyComponents,
    TinySDXLComponents,
    save_tiny_pipeline,
    tiny_components,
    tiny_scheduler,
    tiny_sdxl_components,
    tiny_sdxl_unet,
    tiny_text_encoder,
    tiny_unet,
    tiny_vae,
)
from instructedit.testing._language_model import (
    CAPTION_EDIT_CORPUS,
    save_tiny_captioner,
    tiny_causal_lm,
    tiny_lm_tokenizer,
)
from instructedit.testing._open_clip import (
    TINY_OPEN_CLIP_CONFIG,
    save_tiny_open_clip,
    tiny_open_clip,
)

__all__ = [
    "CAPTION_EDIT_CORPUS",
    "CLIP_CONTEXT_LENGTH",
    "CLIP_VOCAB_SIZE",
    "SD_SCHEDULER_CONFIG",
    "TINY_OPEN_CLIP_CONFIG",
    "ChatServer",
    "SchedulerName",
    "TinyComponents",
    "TinySDXLComponents",
    "clip_text_encoder",
    "clip_tokenizer",
    "clip_tokenizer_dir",
    "save_open_clip",
    "save_tiny_captioner",
    "save_tiny_open_clip",
    "save_tiny_pipeline",
    "seeded",
    "serve_chat_model",
    "tiny_causal_lm",
    "tiny_components",
    "tiny_lm_tokenizer",
    "tiny_open_clip",
    "tiny_scheduler",
    "tiny_sdxl_components",
    "tiny_sdxl_unet",
    "tiny_text_encoder",
    "tiny_unet",
    "tiny_vae",
]

publish(__name__, globals(), __all__)
