"""Each architecture's reference training recipe; params.yaml overrides any key it sets."""

from __future__ import annotations

from digitpipe.core.config import Augment, Recipe, TrainParams

NO_AUGMENT = Augment()

# The default: one-cycle AdamW, light augmentation, validated and exported as a weight average.
# Its weight decay was chosen by the mean validation loss of three seeds (README, "What the
# default tried").
BNCNN = Recipe(
    max_epochs=5,
    batch_size=128,
    optimizer="adamw",
    lr=0.01,
    weight_decay=0.1,
    scheduler="onecycle",
    final_lr_fraction=0.1,  # the average of a still-moving model generalises better
    ema=0.995,
    augment=Augment(rotation=5, translation=0.05, scale=0.05),
    test_time_shift=1,
)

# The reference recipes (see the README's model zoo table for their sources and results).
RECIPES: dict[str, Recipe] = {
    "softmax": Recipe(max_epochs=10, batch_size=128, optimizer="rmsprop", lr=1e-3),
    "mlp": Recipe(
        max_epochs=10, batch_size=32, optimizer="sgd", lr=0.01, momentum=0.9, nesterov=True
    ),
    "lenet": Recipe(
        max_epochs=20, batch_size=100, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-5
    ),
    "convnet3": Recipe(max_epochs=10, batch_size=128, optimizer="adam", lr=1e-3),
    "tinycnn": Recipe(
        max_epochs=30,
        batch_size=256,
        optimizer="adam",
        lr=1e-3,
        eps=1e-4,
        weight_decay=1e-4,
        augment=Augment(rotation=10, translation=0.1),
    ),
    "bncnn": BNCNN,
    # The wider network, longer, with elastic distortion ending two epochs early, a slower
    # average and a real weight decay.
    "best": BNCNN.model_copy(
        update={
            "max_epochs": 12,
            "weight_decay": 0.05,
            "final_lr_fraction": 0.05,
            "ema": 0.998,
            "augment": Augment(rotation=8, translation=0.08, scale=0.08, elastic=1.0),
            "clean_epochs": 2,
        }
    ),
}

# What a recipe leaves unset.
FALLBACK = Recipe(
    momentum=0.0,
    nesterov=False,
    weight_decay=0.0,
    eps=1e-8,
    scheduler="none",
    final_lr_fraction=1e-4,
    label_smoothing=0.0,
    ema=0.0,
    augment=NO_AUGMENT,
    clean_epochs=0,
    test_time_shift=0,
)


def resolve_recipe(arch: str, train: TrainParams) -> Recipe:
    """The complete recipe: params.yaml's non-null keys over the arch's recipe over FALLBACK.

    ``augment`` merges key by key: ``augment: {rotation: 3}`` keeps the recipe's translation,
    scale and elastic distortion.
    """
    merged = FALLBACK.model_dump()
    for layer in (RECIPES[arch], train):
        settings = layer.model_dump(include=set(Recipe.model_fields), exclude_none=True)
        if layer.augment is not None:
            settings["augment"] = merged["augment"] | layer.augment.model_dump(exclude_unset=True)
        merged |= settings
    return Recipe.model_validate(merged)
