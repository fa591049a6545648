"""unet_layers: the U-Net's layers, shapes, weights and skip connections, read from the model."""

from __future__ import annotations

import pytest

from lunglib.models.unet import build_unet, resize_unet, unet_layers


def _by_name(rows):
    return {row["layer"]: row for row in rows}


def test_layers_follow_the_model_with_shapes_weights_and_parts():
    model = build_unet((32, 32, 5), depth=2, filters=16, batch_norm=False)
    rows = unet_layers(model)
    assert [r["layer"] for r in rows] == [layer.name for layer in model.layers]
    assert sum(r["weights"] for r in rows) == model.count_params()
    table = _by_name(rows)
    # "same" convolutions keep the size, each pooling halves it, channels double per level
    assert table["down0_conv2"]["shape"] == (32, 32, 16)
    assert table["pool0"]["shape"] == (16, 16, 16)
    assert table["pool1"]["shape"] == (8, 8, 32)
    assert table["bottom_conv2"]["shape"] == (8, 8, 64)
    assert table["up1"]["shape"] == (16, 16, 32)  # a stride-2 transposed convolution doubles
    assert table["probability"]["shape"] == (32, 32, 1)
    # (k * k * c_in + 1) * c_out
    assert table["down0_conv1"]["weights"] == (9 * 5 + 1) * 16
    assert table["up1"]["weights"] == (4 * 64 + 1) * 32
    parts = [r["part"] for r in rows]
    assert parts[0] == "input" and parts[-1] == "output"
    assert parts.index("bottleneck") > max(i for i, p in enumerate(parts) if p == "encoder")
    assert parts.index("decoder") > max(i for i, p in enumerate(parts) if p == "bottleneck")


@pytest.mark.parametrize("shape, depth", [((32, 48, 1), 3), ((8, 16, 16, 2), 2)])
def test_every_skip_joins_the_upsampled_path_with_the_encoder_block_of_its_level(shape, depth):
    model = build_unet(shape, depth=depth, filters=4, batch_norm=True)
    rows = unet_layers(model)
    table = _by_name(rows)
    assert sum(r["weights"] for r in rows) == model.count_params()  # batch-norm statistics too
    skips = [r for r in rows if r["type"] == "Concatenate"]
    assert [r["layer"] for r in skips] == [f"skip{level}" for level in reversed(range(depth))]
    for row in skips:
        level = row["layer"].removeprefix("skip")
        up, encoder = row["inputs"]
        assert up == f"up{level}"
        assert table[encoder]["block"] == f"down{level}"
        assert table[encoder]["layer"] == table[f"pool{level}"]["inputs"][0]  # what is pooled
        assert table[up]["shape"][:-1] == table[encoder]["shape"][:-1]
        assert row["shape"][-1] == table[up]["shape"][-1] + table[encoder]["shape"][-1]
    plain = [r for r in rows if r["type"] != "Concatenate" and r["part"] != "input"]
    assert all(len(r["inputs"]) == 1 for r in plain)


def test_a_resized_unet_reports_the_new_sizes():
    model = build_unet((32, 32, 1), depth=2, filters=4, batch_norm=False)
    table = _by_name(unet_layers(resize_unet(model, (64, 96))))
    assert table["pool1"]["shape"] == (16, 24, 8)
    assert table["probability"]["shape"] == (64, 96, 1)
