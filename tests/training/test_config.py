import math

import pytest

from instructedit.training import TrainConfig


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"learning_rate": "1e-4"}, TypeError, "learning_rate must be a number, got str '1e-4'"),
        ({"ema_decay": True}, TypeError, "ema_decay must be a number, got bool"),
        ({"adam_beta1": 1.0}, ValueError, r"adam_beta1 must be in \[0, 1\), got 1.0"),
        ({"adam_beta2": math.nan}, ValueError, r"adam_beta2 must be in \[0, 1\), got nan"),
        ({"weight_decay": math.nan}, ValueError, "weight_decay must be a finite number >= 0"),
        ({"warmup_steps": -1}, ValueError, "warmup_steps must be an int >= 0, got -1"),
        ({"num_workers": 1.5}, ValueError, "num_workers must be an int >= 0"),
        ({"seed": "0"}, ValueError, "seed must be an int"),
        ({"random_flip": "no"}, TypeError, "random_flip must be true or false, got 'no'"),
        ({"resize_resolution": 300.0}, ValueError, "resize_resolution must be an int or None"),
        ({"checkpoints_to_keep": 0.5}, ValueError, "checkpoints_to_keep must be >= 1 or None"),
    ],
)
def test_numbers_and_flags_of_the_wrong_kind_are_refused(settings, error, message):
    with pytest.raises(error, match=message):
        TrainConfig(**settings)


def test_validation_settings_are_checked(tmp_path):
    with pytest.raises(TypeError, match="validation_prompts must be a list or tuple"):
        TrainConfig(validation_prompts="make it snowy")  # type: ignore[arg-type]
    image = tmp_path / "val.png"
    image.write_bytes(b"")
    listed = TrainConfig(validation_prompts=["make it snowy"], validation_image=str(image))
    assert listed.validation_prompts == ("make it snowy",)
    with pytest.raises(ValueError, match=r"validation_prompts\[1\] is empty"):
        TrainConfig(validation_prompts=("make it snowy", " "), validation_image=str(image))
    with pytest.raises(FileNotFoundError, match="validation_image: no such file"):
        TrainConfig(validation_prompts=("make it snowy",), validation_image=str(tmp_path / "x.png"))


def test_from_dict_takes_a_mapping_and_keeps_a_string_whole():
    with pytest.raises(TypeError, match="training settings must be a mapping"):
        TrainConfig.from_dict([("max_steps", 3)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="validation_prompts must be a list or tuple"):
        TrainConfig.from_dict({"validation_prompts": "make it snowy"})
    assert TrainConfig.from_dict({"max_steps": 3}).max_steps == 3
