"""Which test images to explain: worst cases and typical images from evaluate, explicit ids."""

from __future__ import annotations

from pathlib import Path

from digitpipe.core.config import ActivationsParams
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.files import read_json_report
from digitpipe.core.numbers import counted
from digitpipe.dataset.images import ImageSet
from digitpipe.outputs.evaluate import WorstCases


def choose_images(
    settings: ActivationsParams, worst_cases: Path, test: ImageSet
) -> dict[str, list[str]]:
    """Image id -> why it was chosen, in a stable order (explicit ids first)."""
    report = read_json_report(worst_cases, "evaluate", WorstCases)
    reasons: dict[str, list[str]] = {}

    def add(image_id: str, reason: str) -> None:
        reasons.setdefault(image_id, []).append(reason)

    known = set(test.ids.tolist())
    for image_id in settings.image_ids:
        if image_id not in known:
            raise DigitpipeError(
                f"activations.image_ids: '{image_id}' is not a test image id (ids look like "
                f"'{test.ids[0]}')."
            )
        add(image_id, "requested")
    for mistake in report.confident_mistakes[: settings.worst_cases]:
        add(mistake.image_id, f"confident mistake: {mistake.actual} read as {mistake.predicted}")
    if settings.typical:
        for name, typical in report.typical.items():
            add(typical.image_id, f"typical {name}")
    if not reasons:
        mistakes = len(report.confident_mistakes)
        raise DigitpipeError(
            f"activations: no test image to explain (worst_cases {settings.worst_cases} of "
            f"{counted(mistakes, 'confident mistake')} from evaluate, typical false, no "
            "image_ids); set activations.typical: true or list activations.image_ids."
        )
    if settings.panel_image is not None and settings.panel_image not in reasons:
        raise DigitpipeError(
            f"activations.panel_image '{settings.panel_image}' is not among the chosen images; "
            "add it to activations.image_ids."
        )
    return reasons
