"""Inversion-free editing (InfEdit's virtual inversion): exact reconstruction, equality with the
reference algorithm's steps on the same weights, and the other real-image methods."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler
from PIL import Image

from instructedit.p2p import PromptToPrompt, SelfAttentionInjection, UnifiedAttentionControl
from instructedit.testing import SD_SCHEDULER_CONFIG, tiny_components

STEPS = 6


@pytest.fixture
def p2p():
    return PromptToPrompt(**tiny_components(in_channels=4, seed=0, scheduler="ddim"))


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _lcm():
    return LCMScheduler(**SD_SCHEDULER_CONFIG)


@pytest.mark.parametrize("sampler", ["ddim", "lcm"])
@pytest.mark.parametrize("eta", [1.0, 0.3])
def test_the_source_prompt_gives_the_image_back_exactly(p2p, image, sampler, eta):
    """In float64, to float64 precision: identical rows of one batch may round differently in
    float32, which the early steps' 1/√ᾱ magnifies to ~1e-4."""
    p2p.to(dtype=torch.float64)
    scheduler = _lcm() if sampler == "lcm" else None
    out = p2p.edit_real(
        image,
        "a red ball",
        "a red ball",
        guidance_scale=7.5,
        source_guidance_scale=7.5,
        num_inference_steps=STEPS if sampler == "ddim" else 4,
        eta=eta,
        scheduler=scheduler,
        output_type="latent",
        progress=False,
    )
    assert out.source.dtype == torch.float64
    assert (out.target - out.source).abs().max() <= 1e-10 * out.source.abs().max()
    edited = p2p.edit_real(
        image,
        "a red ball",
        "a blue cube",
        output_type="latent",
        progress=False,
        num_inference_steps=STEPS,
        scheduler=scheduler,
        eta=eta,
    )
    assert (edited.target - edited.source).abs().max() > 1e-3 * edited.source.abs().max()


def _ddcm(scheduler, index, x_s, x_t, e_s, e_t, x_0, noise, eta):
    """InfEdit's DDCM update, written out from the paper's algorithm."""
    timesteps = scheduler.timesteps
    t = int(timesteps[index])
    prev = int(timesteps[index + 1]) if index + 1 < len(timesteps) else t
    a_t = scheduler.alphas_cumprod[t].double()
    a_prev = (
        scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
    ).double()
    b_t, b_prev = 1 - a_t, 1 - a_prev
    std = eta * b_prev
    e_c = (x_s - a_t**0.5 * x_0) / b_t**0.5
    pred_x0 = x_0 + ((x_t - x_s) - b_t**0.5 * (e_t - e_s)) / a_t**0.5
    direction = (b_prev - std) ** 0.5 * ((e_t - e_s) + e_c)
    prev_xt = a_prev**0.5 * pred_x0 + direction + std**0.5 * noise
    prev_xs = a_prev**0.5 * x_0 + direction + std**0.5 * noise
    return prev_xs, prev_xt, pred_x0


def _infedit_loop(p2p, x_0, source, target, *, scale, source_scale, eta, seed, steps, run=None,
                  reference=None):  # fmt: skip
    """InfEdit's DDCM loop on ``p2p``'s UNet, six rows a call in its order (uncond then cond;
    source, target, mutual), over the last ``run`` of ``steps`` DDIM timesteps, with
    ``reference``'s step counter and blend when given; returns the target's last clean
    estimate."""
    scheduler = DDIMScheduler.from_config(p2p.scheduler.config, clip_sample=False)
    scheduler.set_timesteps(steps)
    run = steps if run is None else run
    offset = steps - run
    timesteps = scheduler.timesteps[offset:]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x_0.shape, generator=generator).double()
    a_first = scheduler.alphas_cumprod[int(timesteps[0])].double()
    x_src = x_tgt = x_mut = a_first**0.5 * x_0 + (1 - a_first) ** 0.5 * noise
    empty, source_text, target_text = (p2p.encode_text([t]) for t in ("", source, target))
    texts = torch.cat([empty, empty, empty, source_text, target_text, source_text])
    for index, t in enumerate(timesteps):
        if reference is not None:
            reference.step = index
        rows = torch.cat([x_src, x_tgt, x_mut, x_src, x_tgt, x_mut])
        e = p2p.unet(rows, t, encoder_hidden_states=texts).sample
        (s_u, t_u, m_u, s_c, t_c, m_c) = e.chunk(6)
        e_t = t_u + scale * (t_c - t_u)
        e_s = s_u + source_scale * (s_c - s_u)
        e_m = m_u + source_scale * (m_c - m_u)
        noise = torch.randn(x_0.shape, generator=generator).double()
        step = index + offset
        _, new_tgt, pred = _ddcm(scheduler, step, x_src, x_tgt, e_s, e_t, x_0, noise, eta)
        x_src, x_mut, _ = _ddcm(scheduler, step, x_src, x_mut, e_s, e_m, x_0, noise, eta)
        x_tgt = new_tgt
        if reference is not None:
            reference.step = index + 1  # InfEdit's step counter moves on inside the UNet call
            if index > 0:
                alpha = scheduler.alphas_cumprod[int(t)].double()
                x_tgt = reference.blend(index, x_src, x_tgt, x_mut, alpha)
    return pred


@torch.no_grad()
def test_equals_the_reference_algorithm_step_by_step(p2p, image):
    p2p.to(dtype=torch.float64)  # the batch layouts differ: compare beyond float32 rounding
    source, target, scale, source_scale, eta, seed = "a red ball", "a blue cube", 7.5, 1.5, 0.7, 3
    ours = p2p.edit_real(
        image,
        source,
        target,
        guidance_scale=scale,
        source_guidance_scale=source_scale,
        eta=eta,
        seed=seed,
        num_inference_steps=STEPS,
        output_type="latent",
        progress=False,
    )
    # The reference: InfEdit's loop on the same UNet.
    pred = _infedit_loop(
        p2p, ours.source, source, target, scale=scale, source_scale=source_scale, eta=eta,
        seed=seed, steps=STEPS,
    )  # fmt: skip
    assert pred.dtype == torch.float64
    assert (ours.target - pred).abs().max() <= 1e-9 * pred.abs().max()


def test_unsupported_samplers_and_targets_are_refused(p2p, image):
    from diffusers import EulerDiscreteScheduler

    euler = EulerDiscreteScheduler(**SD_SCHEDULER_CONFIG)
    with pytest.raises(ValueError, match="virtual inversion takes the timesteps of"):
        p2p.edit_real(image, "a", "b", scheduler=euler, progress=False)
    v_model = DDIMScheduler(**{**SD_SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    with pytest.raises(ValueError, match="this model predicts 'v_prediction'"):
        p2p.edit_real(image, "a", "b", scheduler=v_model, progress=False)


def test_strength_runs_diffusers_share_of_the_steps(p2p, image):
    from instructedit.p2p import VirtualInversion

    sampler = VirtualInversion(DDIMScheduler(**SD_SCHEDULER_CONFIG), torch.zeros(1, 4, 4, 4))
    for strength, steps in ((1.0, 10), (0.55, 5), (0.5, 5), (0.05, 1)):
        sampler.strength = strength
        sampler.set_timesteps(10)
        assert len(sampler.timesteps) == steps


def test_strength_starts_partway(p2p, image):
    kwargs = {"num_inference_steps": STEPS, "output_type": "latent", "progress": False}
    full = p2p.edit_real(image, "a red ball", "a blue cube", **kwargs)
    half = p2p.edit_real(image, "a red ball", "a blue cube", strength=0.5, **kwargs)
    # Fewer steps from a less noisy start stay closer to the image.
    assert (half.target - half.source).abs().mean() < (full.target - full.source).abs().mean()


@pytest.mark.parametrize("method", ["ddim", "null_text"])
def test_inversion_methods_edit_through_the_same_call(p2p, image, method):
    out = p2p.edit_real(
        image,
        "a red ball",
        "a blue ball",
        method=method,
        controller=SelfAttentionInjection(0.5),
        num_inference_steps=3,
        output_type="np",
        progress=False,
    )
    assert out.source.shape == out.target.shape == (1, 32, 32, 3)
    assert np.abs(out.source - out.target).max() > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"method": "invert"}, ValueError, "method must be one of"),
        (
            {"controller": SelfAttentionInjection(0.5)},
            ValueError,
            "must be a UnifiedAttentionControl",
        ),
        ({"eta": 1.5}, ValueError, r"eta must be in \[0, 1\], got 1.5"),
        ({"strength": 0.0}, ValueError, r"strength must be in \(0, 1\], got 0.0"),
        ({"guidance_scale": float("nan")}, ValueError, "guidance_scale must be a finite number"),
        ({"target_prompt": None}, TypeError, "target_prompt must be a str"),
    ],
)
def test_bad_real_edit_arguments_are_refused(p2p, image, kwargs, error, message):
    arguments = {"source_prompt": "a red ball", "target_prompt": "a blue ball", "progress": False}
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        p2p.edit_real(image, **arguments)


def test_the_edit_real_command_writes_the_edit_and_the_reconstruction(tmp_path, image):
    from instructedit.cli import main
    from instructedit.testing import save_tiny_pipeline

    model = save_tiny_pipeline(tmp_path / "t2i", kind="text_to_image", scheduler="ddim")
    photo = tmp_path / "photo.png"
    image.save(photo)
    out = tmp_path / "out" / "edited.png"
    arguments = ["--source", "a red ball", "--target", "a blue cube", "--model", str(model)]
    options = ["--steps", "4", "--seed", "2", "--blend", "blue cube", "--self-replace-steps", "0.5"]
    assert main(["edit-real", str(photo), str(out), *arguments, *options]) == 0
    p2p = PromptToPrompt.from_pretrained(model)
    # InfEdit's unified attention control, as the command's options set it.
    controller = UnifiedAttentionControl.from_prompts(
        ["a red ball"], ["a blue cube"], p2p.tokenizer, local_words=["blue cube"],
        self_replace_steps=0.5, encode_text=p2p.encode_text,
    )  # fmt: skip
    direct = p2p.edit_real(
        image, "a red ball", "a blue cube", controller=controller, num_inference_steps=4, seed=2,
        output_type="np", progress=False,
    )  # fmt: skip
    written = np.asarray(Image.open(out), np.float32) / 255
    assert np.abs(written - direct.target[0]).max() <= 1 / 255
    source = np.asarray(Image.open(out.with_name("edited-source.png")), np.float32) / 255
    assert np.abs(source - direct.source[0]).max() <= 1 / 255
    plain = p2p.edit_real(
        image, "a red ball", "a blue cube", num_inference_steps=4, seed=2, output_type="np",
        progress=False,
    )  # fmt: skip
    assert np.abs(written - plain.target[0]).max() > 4 / 255  # the control changes the edit
    with pytest.raises(SystemExit):
        main(["edit-real", str(photo), str(tmp_path / "x.gif"), *arguments])
    with pytest.raises(SystemExit):  # the blends are virtual inversion's
        main(["edit-real", str(photo), str(out), *arguments, "--method", "ddim", "--keep", "red"])


# ---------------------------------------------------------------------- unified attention control


class _InfEditReference:
    """InfEdit's unified attention control written out from its algorithm: attention
    probabilities materialised, the batch ``[uncond s, t, m, cond s, t, m]``, one pair."""

    def __init__(self, refine, local, mutual, cross, self_steps, steps, skipped, thresholds):
        self.mapper, self.alphas = refine.mapper[0], refine.alphas[0].double()
        self.local, self.mutual = local, mutual
        self.cross, self.self_steps = cross, self_steps
        self.steps, self.skipped = steps, skipped  # the whole schedule, the steps left out
        self.thresh_e, self.thresh_m = thresholds
        self.step = 0
        self.store = {}  # layer → summed [2, heads, N, S] maps
        self.resolution = {}
        self.masks = []

    def progress(self):
        return (self.step + self.skipped + 1) / self.steps

    def refine(self, base, own):
        return base[..., self.mapper] * self.alphas + own * (1 - self.alphas)

    def attention(self, layer, attn, hidden, text):
        batch = hidden.shape[0]
        heads = attn.heads

        def split(x):
            return x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        is_cross = text is not None
        context = text if is_cross else hidden
        q, k, v = split(attn.to_q(hidden)), split(attn.to_k(context)), split(attn.to_v(context))
        if not is_cross:
            halves = []
            for half in (slice(0, 3), slice(3, 6)):
                qh, kh, vh = q[half], k[half], v[half]
                if self.self_steps <= self.progress():
                    qh, kh, vh = qh[[0, 1, 1]], kh[[0, 1, 0]], vh[[0, 1, 0]]
                else:
                    qh, kh, vh = qh[[0, 0, 0]], kh[[0, 0, 0]], vh[[0, 1, 0]]
                halves.append((qh, kh, vh))
            q, k, v = (torch.cat(parts) for parts in zip(*halves, strict=True))
        probabilities = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)
        if is_cross:
            p_s, p_t, p_m = probabilities[3], probabilities[4], probabilities[5]
            base_store, mutual_store = self.refine(p_s, p_t), self.refine(p_m, p_t)
            if self.cross >= self.progress():
                probabilities = probabilities.clone()
                probabilities[4] = base_store
            if not layer.startswith("mid") and p_s.shape[1] <= 32**2:
                stored = torch.stack([base_store, mutual_store])
                self.store[layer] = self.store.get(layer, 0) + stored
                side = int(p_s.shape[1] ** 0.5)
                self.resolution[layer] = side
        out = (probabilities @ v).transpose(1, 2).reshape(batch, -1, heads * v.shape[-1])
        return attn.to_out[1](attn.to_out[0](out))

    def mask(self, maps, tokens, threshold, size):
        selected = torch.zeros(maps.shape[-1], dtype=maps.dtype)
        selected[tokens] = 1
        chosen = (maps * selected).mean(0)[..., 1:].amax(-1)[None, None]
        resized = torch.nn.functional.interpolate(chosen, size=size)
        return resized / resized.amax(dim=(2, 3), keepdim=True) > threshold

    def blend(self, index, x_s, x_t, x_m, alpha_prod):
        size = x_t.shape[2:]
        quarter = ((size[0] + 1) // 2 + 1) // 2
        side = min(set(self.resolution.values()), key=lambda r: abs(r - quarter))
        layers = [name for name, r in self.resolution.items() if r == side]
        maps = torch.cat([self.store[name] for name in layers], dim=1)  # [2, L·heads, N, S]
        maps = maps.view(2, maps.shape[1], side, side, maps.shape[-1])
        maps_s, maps_m = maps[0], maps[1]
        both = [t for t in self.local if t in self.mutual]
        thresh_e = max(0.15 / alpha_prod**0.5, self.thresh_e)
        mask_e = self.mask(maps_m, self.local, thresh_e, size)
        mask_m = self.mask(maps_s, [t for t in self.mutual if t not in both], self.thresh_m, size)
        mask_me = self.mask(maps_m, both, self.thresh_e, size)
        self.masks.append(mask_e.double().mean().item())
        out = torch.where(mask_e, x_t, x_m)
        out = torch.where(mask_m, x_s, out)
        if self.step + self.skipped + 1 == self.steps:  # after the step: the counter moved on
            out = torch.where(mask_me, x_m, out)
        return out


class _Processor:
    def __init__(self, layer, reference):
        self.layer, self.reference = layer, reference

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
        return self.reference.attention(self.layer, attn, hidden_states, encoder_hidden_states)


@torch.no_grad()
@pytest.mark.parametrize("strength", [1.0, 0.7])
def test_unified_control_equals_the_reference_algorithm(p2p, image, strength):
    from instructedit.p2p import Refine, UnifiedAttentionControl, word_token_indices

    p2p.to(dtype=torch.float64)
    source, target = "a red ball on green grass", "a blue ball on green grass"
    scale, source_scale, eta, seed, steps = 7.5, 1.0, 1.0, 5, 8
    settings = {"cross_replace_steps": 0.6, "self_replace_steps": 0.4}
    controller = UnifiedAttentionControl.from_prompts(
        [source], [target], p2p.tokenizer, local_words=["blue ball"], mutual_words=["ball grass"],
        local_threshold=0.9, mutual_threshold=0.95, **settings,
    )  # fmt: skip
    ours = p2p.edit_real(
        image, source, target, controller=controller, guidance_scale=scale,
        source_guidance_scale=source_scale, eta=eta, seed=seed, strength=strength,
        num_inference_steps=steps, output_type="latent", progress=False,
    )  # fmt: skip

    run = max(1, int(steps * strength))
    words = {"blue": None, "ball": None, "grass": None}
    for word in words:
        words[word] = word_token_indices(target, word, p2p.tokenizer)
    reference = _InfEditReference(
        Refine.from_prompts([source], [target], p2p.tokenizer),
        local=words["blue"] + words["ball"],
        mutual=words["ball"] + words["grass"],
        cross=0.6,
        self_steps=0.4,
        steps=steps,
        skipped=steps - run,
        thresholds=(0.9, 0.95),
    )
    previous = dict(p2p.unet.attn_processors)
    p2p.unet.set_attn_processor({name: _Processor(name, reference) for name in previous})
    try:
        pred = _infedit_loop(
            p2p, ours.source, source, target, scale=scale, source_scale=source_scale, eta=eta,
            seed=seed, steps=steps, run=run, reference=reference,
        )  # fmt: skip
    finally:
        p2p.unet.set_attn_processor(previous)
    # The blend did something: some steps' target masks cover part of the latents, not all.
    assert any(0.0 < share < 1.0 for share in reference.masks)
    assert (ours.target - pred).abs().max() <= 1e-11 * pred.abs().max()


def test_a_swapped_word_is_aligned_with_its_counterpart(p2p):
    """InfEdit's completion of the alignment, checked by hand on features made to match."""
    from instructedit.p2p import fill_alignment_gaps, refinement_mapper

    source, target = "a red ball", "a big blue ball"
    mapper, alphas = refinement_mapper(source, target, p2p.tokenizer)
    assert alphas[:6].tolist() == [1, 1, 0, 0, 1, 1]  # "big" and "blue" are unaligned
    features = torch.eye(77, 16)
    target_features = torch.eye(77, 16)
    target_features[3] = features[2]  # "blue" looks like "red"
    target_features[2] = features[10]  # "big" like nothing in the gap
    added = fill_alignment_gaps(mapper, alphas, features, target_features, 5)
    assert added == [(3, 2)]
    assert (int(mapper[3]), float(alphas[3]), float(alphas[2])) == (2, 1.0, 0.0)
    # With the model's own encodings (one-token gaps have one candidate) a swap aligns too,
    # and a target word aligned to a source token of a blend word joins the blend.
    from instructedit.p2p import UnifiedAttentionControl

    control = UnifiedAttentionControl.from_prompts(
        ["a red ball and a red cube"], ["a red ball and a blue cube"], p2p.tokenizer,
        encode_text=p2p.encode_text, local_words=["red"],
    )  # fmt: skip
    assert int(control.refine.mapper[0, 6]) == 6
    assert float(control.refine.alphas[0, 6]) == 1.0
    assert control.local_tokens == [[2, 6]]
    plain = UnifiedAttentionControl.from_prompts(
        ["a red ball and a red cube"], ["a red ball and a blue cube"], p2p.tokenizer,
        local_words=["red"],
    )  # fmt: skip
    assert float(plain.refine.alphas[0, 6]) == 0.0
    assert plain.local_tokens == [[2]]


def test_blend_words_and_word_indices(p2p):
    from instructedit.p2p import UnifiedAttentionControl

    source, target = "a red ball and a blue ball", "a green ball and a blue ball"
    make = UnifiedAttentionControl.from_prompts
    by_edits = make([source], [target], p2p.tokenizer, local_words="edits")
    assert by_edits.local_tokens == [[2, 3]]  # "green ball", the edited one only
    by_word = make([source], [target], p2p.tokenizer, local_words=[["green", "ball"]])
    assert by_word.local_tokens == [[2, 3, 7]]  # every "ball"
    with pytest.raises(ValueError, match="local_words must be a list with one entry per pair"):
        make([source], [target], p2p.tokenizer, local_words="green")
    with pytest.raises(ValueError, match="holds words or indices of the 7 words"):
        make([source], [target], p2p.tokenizer, mutual_words=[[9]])
    other = by_edits.replace(cross_replace_steps=0.2, local_threshold=0.5)
    assert (other.cross_replace_steps, other.local_threshold) == (0.2, 0.5)
    assert other.self_replace_steps == by_edits.self_replace_steps
    assert other.local_tokens == by_edits.local_tokens
    assert other.refine is by_edits.refine
    with pytest.raises(TypeError, match=r"replace\(\) takes .*, got \['local_words'\]"):
        by_edits.replace(local_words="green")


def test_unified_control_keeps_the_source_exact(p2p, image):
    from instructedit.p2p import UnifiedAttentionControl

    p2p.to(dtype=torch.float64)
    prompt = "a red ball on green grass"
    controller = UnifiedAttentionControl.from_prompts(
        [prompt], [prompt], p2p.tokenizer, local_words=["ball"], mutual_words=["grass"]
    )
    out = p2p.edit_real(
        image, prompt, prompt, controller=controller, num_inference_steps=STEPS,
        guidance_scale=7.5, source_guidance_scale=7.5, output_type="latent", progress=False,
    )  # fmt: skip
    assert (out.target - out.source).abs().max() <= 1e-10 * out.source.abs().max()


def test_unified_control_refuses_what_it_cannot_run(p2p, image):
    from instructedit.p2p import UnifiedAttentionControl

    make = UnifiedAttentionControl.from_prompts
    with pytest.raises(ValueError, match="mutual word 'blue' must be in the source prompt"):
        make(["a red ball"], ["a blue ball"], p2p.tokenizer, mutual_words=["blue"])
    with pytest.raises(ValueError, match="word 'cube' is not in the prompt"):
        make(["a red ball"], ["a blue ball"], p2p.tokenizer, local_words=["cube"])
    with pytest.raises(ValueError, match=r"cross_replace_steps must be a fraction in \[0, 1\]"):
        make(["a red ball"], ["a blue ball"], p2p.tokenizer, cross_replace_steps=1.5)
    controller = make(["a red ball"], ["a blue ball"], p2p.tokenizer)
    with pytest.raises(ValueError, match="UnifiedAttentionControl runs with method='virtual'"):
        p2p.edit_real(image, "a red ball", "a blue ball", method="ddim", controller=controller)
    two = make(["a red ball"] * 2, ["a blue ball"] * 2, p2p.tokenizer)
    with pytest.raises(ValueError, match="controller was made for 2 pairs, the edit has 1"):
        p2p.edit_real(image, "a red ball", "a blue ball", controller=two, progress=False)


# ---------------------------------------------------------------------- the inversion methods


@torch.no_grad()
def test_ddim_inversion_equals_diffusers_inverse_scheduler(p2p, image):
    """DDIM inversion (Mokady et al.'s ``next_step``) against diffusers' ``DDIMInverseScheduler``
    stepping the same UNet with the prompt's prediction."""
    from diffusers import DDIMInverseScheduler

    p2p.to(dtype=torch.float64)
    ours = p2p.invert(
        image, "a red ball", num_inference_steps=STEPS, null_text=False, progress=False
    )
    inverse = DDIMInverseScheduler.from_config(p2p.scheduler.config, clip_sample=False)
    inverse.set_timesteps(STEPS)
    latent = ours.trajectory[0]
    text = p2p.encode_text(["a red ball"])
    for index, t in enumerate(inverse.timesteps):
        eps = p2p.unet(latent, t, encoder_hidden_states=text).sample
        latent = inverse.step(eps, t, latent).prev_sample
        assert torch.allclose(ours.trajectory[index + 1], latent, rtol=0, atol=1e-10)


def test_null_text_inversion_equals_the_reference_optimisation(p2p, image):
    """Null-text inversion against its algorithm written out (Mokady et al.'s
    ``null_optimization``) with diffusers' ``DDIMScheduler`` for the guided steps."""
    p2p.to(dtype=torch.float64)
    inner, scale = 3, 7.5
    plain = p2p.invert(
        image, "a red ball", num_inference_steps=STEPS, null_text=False, progress=False
    )
    ours = p2p.invert(
        image, "a red ball", num_inference_steps=STEPS, inner_steps=inner, progress=False
    )
    scheduler = DDIMScheduler.from_config(p2p.scheduler.config, clip_sample=False)
    scheduler.set_timesteps(STEPS)
    cond, uncond = p2p.encode_text(["a red ball"]), p2p.encode_text([""])
    latent = plain.trajectory[-1]
    for param in p2p.unet.parameters():
        param.requires_grad_(False)
    for index, t in enumerate(scheduler.timesteps):
        uncond = uncond.clone().detach().requires_grad_(True)
        optimizer = torch.optim.Adam([uncond], lr=1e-2 * (1.0 - index / 100.0))
        previous = plain.trajectory[STEPS - index - 1]
        with torch.no_grad():
            eps_cond = p2p.unet(latent, t, encoder_hidden_states=cond).sample
        for _ in range(inner):
            eps_uncond = p2p.unet(latent, t, encoder_hidden_states=uncond).sample
            eps = eps_uncond + scale * (eps_cond - eps_uncond)
            loss = torch.nn.functional.mse_loss(
                scheduler.step(eps, t, latent).prev_sample, previous
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if loss.item() < 1e-5 + index * 2e-5:
                break
        uncond = uncond.detach()
        assert torch.allclose(ours.uncond_embeddings[index], uncond, rtol=0, atol=1e-9)
        with torch.no_grad():
            pair = p2p.unet(
                torch.cat([latent] * 2), t, encoder_hidden_states=torch.cat([uncond, cond])
            ).sample
            eps_u, eps_c = pair.chunk(2)
            latent = scheduler.step(eps_u + scale * (eps_c - eps_u), t, latent).prev_sample
