"""Specification of the model-card template in `model_cards/` (rendered with huggingface_hub.ModelCard)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

TEMPLATE = Path(__file__).resolve().parents[1] / "model_cards" / "ddpm_pipeline.md"


def test_the_template_renders_a_card_with_metadata_usage_and_citation():
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        license="apache-2.0",
        tags=["ddpm", "diffusers:DDPMPipeline", "ddpm-hf"],
        datasets=["uoft-cs/cifar10"],
    )
    card = ModelCard.from_template(
        data,
        template_path=str(TEMPLATE),
        model_name="ddpm-cifar10",
        dataset_name="CIFAR-10",
        resolution=32,
        repo_id="someone/ddpm-cifar10",
        sample_grid="samples.png",
        training_description="The paper's CIFAR-10 recipe.",
        training_table=[("steps", "800,000"), ("global batch", 128)],
        evaluation_table=[("FID (50k)", "3.17")],
    )
    reparsed = ModelCard(str(card))
    assert reparsed.data.library_name == "diffusers"
    assert reparsed.data.pipeline_tag == "unconditional-image-generation"
    assert "diffusers:DDPMPipeline" in reparsed.data.tags
    text = str(card)
    assert 'DDPMPipeline.from_pretrained("someone/ddpm-cifar10")' in text
    assert "from diffusers import DDPMPipeline" in text and "from ddpm_hf import DDPMPipeline" in text
    assert "| global batch | 128 |" in text and "| FID (50k) | 3.17 |" in text
    assert "ho2020denoising" in text and "{{" not in text
