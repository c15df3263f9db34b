"""Image-text model folders are told apart by their config (posttrain/core/models.py)."""

import json

from posttrain.core.models import is_image_text_model


def test_a_vision_config_makes_an_image_text_model(tmp_path):
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "config.json").write_text(json.dumps({"model_type": "idefics3", "vision_config": {}}))
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert is_image_text_model(tmp_path / "vlm") and not is_image_text_model(tmp_path / "lm")
    assert not is_image_text_model(tmp_path / "missing")
