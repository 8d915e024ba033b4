import pytest
import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from transformers import CLIPTextModel

from instructedit.testing import (
    SD_SCHEDULER_CONFIG,
    save_tiny_pipeline,
    tiny_components,
    tiny_scheduler,
    tiny_text_encoder,
    tiny_unet,
    tiny_vae,
)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("build", [tiny_unet, tiny_vae, tiny_text_encoder])
def test_same_seed_same_weights_other_seed_other_weights(build):
    assert _states_equal(build(seed=3), build(seed=3))
    assert not _states_equal(build(seed=3), build(seed=4))


def test_building_leaves_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    tiny_components(seed=0)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("in_channels", [4, 8])
def test_unet_channels_and_forward(in_channels):
    unet = tiny_unet(in_channels=in_channels)
    assert unet.config.in_channels == in_channels
    sample = torch.randn(2, in_channels, 8, 12)
    text = torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        out = unet(sample, 10, encoder_hidden_states=text).sample
    assert out.shape == (2, 4, 8, 12)


def test_unet_rejects_other_channel_counts():
    with pytest.raises(ValueError, match="in_channels"):
        tiny_unet(in_channels=5)


def test_text_encoder_width_matches_unet_cross_attention():
    parts = tiny_components()
    ids = parts["tokenizer"]("a red ball", padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = parts["text_encoder"](ids)[0]
    assert hidden.shape == (1, 77, parts["unet"].config.cross_attention_dim)


@pytest.mark.parametrize(
    "name", ["ddim", "ddpm", "pndm", "euler", "euler_ancestral", "dpm_solver++"]
)
def test_schedulers_share_stable_diffusion_betas(name):
    scheduler = tiny_scheduler(name)
    assert scheduler.config.beta_schedule == SD_SCHEDULER_CONFIG["beta_schedule"]
    assert scheduler.config.beta_start == SD_SCHEDULER_CONFIG["beta_start"]
    assert not scheduler.config.get("clip_sample", False)


def test_unknown_scheduler_is_rejected():
    with pytest.raises(ValueError, match="name must be one of"):
        tiny_scheduler("heun")  # type: ignore[arg-type]


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    latents = torch.randn(1, 8, 8, 8)
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    unet, vae, encoder = tiny_unet(seed=5), tiny_vae(seed=5), tiny_text_encoder(seed=5)
    for module, name in [(unet, "unet"), (vae, "vae"), (encoder, "text")]:
        module.save_pretrained(tmp_path / name, safe_serialization=True)
        assert (tmp_path / name / "diffusion_pytorch_model.safetensors").exists() or (
            tmp_path / name / "model.safetensors"
        ).exists()
    unet2 = UNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    vae2 = AutoencoderKL.from_pretrained(tmp_path / "vae").eval()
    encoder2 = CLIPTextModel.from_pretrained(tmp_path / "text").eval()
    ids = torch.tensor([[49406, 320, 1125, 49407]])
    with torch.no_grad():
        text = encoder(ids)[0]
        assert torch.equal(encoder2(ids)[0], text)
        assert torch.equal(unet2(latents, 7, text).sample, unet(latents, 7, text).sample)
        assert torch.equal(
            vae2.encode(image).latent_dist.mode(), vae.encode(image).latent_dist.mode()
        )
        z = torch.randn(1, 4, 8, 8)
        assert torch.equal(vae2.decode(z).sample, vae.decode(z).sample)


def _edit(pipe):
    return pipe(
        "make it snowy",
        image=Image.new("RGB", (32, 24), (200, 30, 30)),
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images


def test_components_drive_diffusers_instruct_pix2pix_deterministically():
    def make():
        return StableDiffusionInstructPix2PixPipeline(
            **tiny_components(seed=0),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    first, second = _edit(make()), _edit(make())
    assert first.shape == (1, 24, 32, 3)
    assert (first == second).all()


def test_saved_edit_pipeline_loads_in_diffusers_with_identical_output(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "edit", kind="edit", seed=0)
    for part in ["model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"]:
        assert (folder / part).exists(), part
    assert list((folder / "unet").glob("*.safetensors"))
    loaded = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, safety_checker=None)
    assert loaded.unet.config.in_channels == 8
    assert type(loaded.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    direct = StableDiffusionInstructPix2PixPipeline(
        **tiny_components(seed=0),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    assert (_edit(loaded) == _edit(direct)).all()


def test_saved_text_to_image_pipeline_loads_in_diffusers(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "t2i", kind="text_to_image", scheduler="ddim")
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    assert pipe.unet.config.in_channels == 4
    out = pipe(
        "a red ball",
        height=16,
        width=16,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert out.shape == (1, 16, 16, 3)
