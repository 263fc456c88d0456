"""Conclusions: markdown templates filled from records, lines without numbers left out."""

from __future__ import annotations

import pandas as pd
from helpers import make_record, scored, shortcut_result

from cxrlib.course import conclusions as cc


def test_render_drops_lines_without_values() -> None:
    template = "- a {x:.2f}\n- b {y}\n- {when_z}c"
    assert cc.render(template, {"x": 0.5, "y": float("nan")}) == "- a 0.50"
    assert cc.render(template, {"x": 0.5, "y": "yes", "when_z": ""}) == "- a 0.50\n- b yes\n- c"


def test_progression_follows_the_numbers_either_way() -> None:
    records = [make_record("DN-V0", variant="v0", test=scored(0.33)),
               make_record("DN-V1", variant="v1", test=scored(0.8)),
               make_record("DN-V2", variant="v2", test=scored(0.7), final={"accuracy": 0.95, "val_accuracy": 0.7}),
               make_record("DN-V2-reg", variant="v2reg", test=scored(0.7),
                           final={"accuracy": 0.85, "val_accuracy": 0.8}),
               make_record("DN-V3", variant="v3", test=scored(0.9))]
    text = cc.render(cc.PROGRESSION, cc.progression_facts(records))
    assert "chance is 0.333" in text
    assert "DN-V1 0.800 (+0.470) → DN-V2 0.700 (-0.100) → DN-V2-reg 0.700 (+0.000)" in text
    assert "+0.250 for DN-V2, +0.050 for DN-V2-reg; dropout's gap is smaller" in text
    assert text.splitlines()[-1] == "- Best test accuracy: **DN-V3** with 0.900."
    # the table so far: only what it can say
    assert len(cc.render(cc.PROGRESSION, cc.progression_facts(records[:1])).splitlines()) == 2


def test_backbones() -> None:
    records = [make_record("DN-V2-reg", variant="v2reg", test=scored(0.7), wall=10.0),
               make_record("DN-V3", variant="v3", test=scored(0.8), wall=40.0),
               make_record("VGG16-frozen", backbone="vgg16", variant="frozen", test=scored(0.5), wall=5.0),
               make_record("X", backbone="xception", variant="frozen")]
    names = ["DN-frozen", "DN-fine-tuned", "VGG16-frozen", "Xception-frozen"]
    text = cc.render(cc.BACKBONES, cc.backbone_facts(records, names))
    assert "**DN-fine-tuned** with 0.800 (95 % bootstrap interval 0.700–0.850)." in text
    assert "Intervals overlapping the best one's: DN-frozen." in text      # 0.75 >= 0.7; VGG's 0.55 not
    assert "No other model's" not in text
    assert "densenet121 0.700 → 0.800 (+0.100)" in text
    assert "Fastest to train: VGG16-frozen (5 s); slowest: DN-fine-tuned (40 s)" in text
    assert cc.render(cc.BACKBONES, cc.backbone_facts(records[3:], names[3:])) == ""


def test_heatmaps_on_lesion_tables() -> None:
    table = pd.DataFrame({"n": [30, 30], "energy_inside": [0.4, 0.2], "random_energy_inside": [0.2, 0.2],
                          "mask_share": [0.2, 0.2], "energy_ratio": [2.0, 1.0],
                          "pointing_rate": [0.6, 0.1], "random_pointing_rate": [0.2, 0.2],
                          "border_share": [0.1, 0.4], "seconds": [1.0, 9.0]},
                         index=pd.Index(["gradcam", "saliency"], name="method"))
    lines = cc.render(cc.HEATMAPS, cc.heatmap_facts(table, subject="the scratch CNN")).splitlines()
    assert "of the scratch CNN" in lines[0] and "gradcam puts the most" in lines[0]
    assert "gradcam; not: saliency" in lines[1]
    assert any("Pointing game: gradcam" in n for n in lines)
    assert any("saliency took 9.0 s" in n for n in lines)
    assert any("With 30 images" in n for n in lines)
    assert not any("No lesion masks" in n for n in lines)
    assert cc.render(cc.HEATMAPS, cc.heatmap_facts()) == ""


def test_heatmaps_without_lesions_and_the_shortcut() -> None:
    table = pd.DataFrame({"n": [80], "border_share": [0.3], "random_border_share": [0.2]},
                         index=pd.Index(["gradcam"], name="method"))
    text = cc.render(cc.HEATMAPS, cc.heatmap_facts(table, shortcut=shortcut_result()))
    assert "No lesion masks" in text and "in the border band, 0.30" in text
    assert "cost the shortcut model 0.45" in text and "did not show" not in text
    quiet = cc.render(cc.HEATMAPS, cc.heatmap_facts(shortcut=shortcut_result(drop=0.0)))
    assert "did not show" in quiet and "cost the shortcut" not in quiet
