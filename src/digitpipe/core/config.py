"""Typed, validated configuration: params.yaml is read here and nowhere else."""

from __future__ import annotations

import difflib
import os
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from digitpipe.core.errors import DigitpipeError, excerpt, invalid_field
from digitpipe.core.files import read_bounded
from digitpipe.core.paths import PARAMS_FILE

MAX_CLASSES = 1000  # labels are stored as int16; a thousand classes is far beyond digit-style data
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Count = Annotated[int, Field(gt=0)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # the range numpy and Lightning seed from
MAX_TEST_TIME_SHIFT = 4  # pixels: a larger move pushes a small image's digit out of the frame
MAX_GALLERY = 200  # images in one gallery picture (a 10^9 request drew until memory ran out)
MAX_LR = 100.0  # far above any recipe's; beyond float32's range the optimiser itself fails
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    """Names and titles land in pictures, Markdown tables and the HTML report: one line each."""
    if CONTROL.search(text):
        raise ValueError("must be one line of text, without newlines, tabs or control characters")
    return text


Label = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_one_line)]


class Section(BaseModel):
    """A params.yaml section: unknown keys are errors (they are usually typos), and so are
    infinite and NaN numbers (`lr: .inf` would train a model of NaNs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Source(Section):
    """One input: an IDX image file with an optional IDX label file, or a CSV file."""

    images: Path | None = None
    labels: Path | None = None
    csv: Path | None = None

    @model_validator(mode="after")
    def _one_format(self) -> Source:
        if (self.images is None) == (self.csv is None):
            raise ValueError("give either 'images' (+ 'labels') for IDX, or 'csv'")
        if self.csv is not None and self.labels is not None:
            raise ValueError("'labels' is for IDX sources; a CSV holds its labels in a column")
        return self

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.images, self.labels, self.csv) if p is not None]


class Limits(Section):
    """Optional caps on rows per split, for quick runs and tests (null: no cap)."""

    train: Count | None = None
    val: Count | None = None
    test: Count | None = None
    predict: Count | None = None


class DataParams(Section):
    """The `data` section: where the raw data is and how to split it."""

    train: Source
    test: Source | None = None
    predict: Source | None = None
    checksums: dict[Path, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = {}
    # null: the classes are 0..K-1, K = the largest training label + 1
    class_names: Annotated[list[Label], Field(min_length=2, max_length=MAX_CLASSES)] | None = None
    image_size: tuple[Count, Count] | None = None
    csv_label_column: str = "label"
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1  # training selects on it
    test_fraction: Fraction = 0.0
    seed: Seed = 42
    limit: Limits = Limits()
    # Drop folder of extra labelled batches appended to the training source (null: off).
    incoming: Path | None = Path("data/raw/incoming")

    @field_validator("limit", mode="before")
    @classmethod
    def _limit_per_split(cls, value: object) -> object:
        if isinstance(value, int | float | str):  # a single cap reads naturally, but is ambiguous
            raise ValueError(
                "give a cap per split, e.g. limit: {train: 2000, val: 500, test: 500} "
                "(-S data.limit.train=2000 in an experiment)"
            )
        return value

    @model_validator(mode="after")
    def _test_source(self) -> DataParams:
        if self.test is None and self.test_fraction == 0:
            raise ValueError("no 'test' source: give one, or a 'test_fraction' > 0 to hold out")
        if self.test is not None and self.test_fraction > 0:
            raise ValueError(
                "give a 'test' source or a 'test_fraction', not both: set data.test: null to hold "
                "out test_fraction of train, or test_fraction: 0 to keep the test source"
            )
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must leave training data (< 1), got "
                f"{self.val_fraction} + {self.test_fraction}; lower one of them"
            )
        repeated = [name for name, n in Counter(self.class_names or []).items() if n > 1]
        if repeated:
            raise ValueError(
                f"class_names must be unique, but these appear more than once: "
                f"{excerpt(repeated)}; give each class its own name"
            )
        return self


class Augment(Section):
    """Random affine augmentation of training batches (all zero: off)."""

    rotation: Annotated[float, Field(ge=0, le=180)] = 0.0  # degrees, +/-
    translation: Annotated[float, Field(ge=0, lt=1)] = 0.0  # fraction of the image size, +/-
    scale: Annotated[float, Field(ge=0, lt=1)] = 0.0  # fraction, +/-
    elastic: Annotated[float, Field(ge=0, le=5)] = 0.0  # pixels: smooth random displacement


ARCHITECTURES = ("softmax", "mlp", "lenet", "convnet3", "tinycnn", "bncnn", "best")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULERS = ("onecycle", "none")


class Recipe(Section):
    """How to train: every key is optional here; null takes the model recipe's value."""

    max_epochs: Count | None = None
    batch_size: Count | None = None  # global: split evenly across devices
    optimizer: Literal[OPTIMIZERS] | None = None
    lr: Annotated[float, Field(gt=0, le=MAX_LR)] | None = None
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None
    nesterov: bool | None = None
    weight_decay: Annotated[float, Field(ge=0)] | None = None
    eps: Annotated[float, Field(gt=0)] | None = None
    scheduler: Literal[SCHEDULERS] | None = None
    final_lr_fraction: Annotated[float, Field(gt=0, le=1)] | None = None  # one-cycle's last lr / lr
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] | None = None
    ema: Annotated[float, Field(ge=0, lt=1)] | None = None  # weight-average decay; 0: off
    augment: Augment | None = None
    # The last this many epochs train on the images as they are (all epochs when it is at least
    # max_epochs): the network ends fitted to undistorted digits; 0: augment throughout.
    clean_epochs: Annotated[int, Field(ge=0)] | None = None
    # Predict by the mean over each image and its copies moved this many pixels right, left,
    # down and up (test-time augmentation: five forward passes); 0: off.
    test_time_shift: Annotated[int, Field(ge=0, le=MAX_TEST_TIME_SHIFT)] | None = None


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# Not ddp_spawn: its workers train copies whose history and averaged weights never return.
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true", "fsdp")
# Mixed precision keeps float32 weights, which the exported safetensors model holds.
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


class TrainParams(Recipe):
    """The `train` section: the recipe, hardware and reproducibility."""

    # The reference recipe the keys start from (conf/model/<arch>.yaml sets it with model.arch):
    # it must be model.arch's, so `-S model.arch=lenet`, which changes the architecture and not
    # the keys, is refused rather than training lenet with bncnn's recipe. null: not checked.
    recipe: Literal[ARCHITECTURES] | None = None
    seed: Seed = 42
    deterministic: bool = True
    accelerator: Literal[ACCELERATORS] = "auto"
    devices: Count | Literal["auto"] = 1
    num_nodes: Count = 1
    strategy: Literal[STRATEGIES] = "auto"
    precision: Literal[PRECISIONS] = "32-true"
    limit_batches: Count | None = None  # cap batches per epoch (quick runs, tests)
    # Seconds any process waits for the others: for every node to join, and in each collective.
    # A node that never starts otherwise holds the rest for Lightning's default of 30 minutes.
    ddp_timeout: Annotated[int, Field(gt=0, le=86_400)] = 300
    # GB of pixels each training process may hold; a split over it is streamed from disk.
    # null: half the machine's memory.
    memory_budget_gb: Annotated[float, Field(gt=0)] | None = None

    @field_validator("augment")
    @classmethod
    def _augment_names_a_key(cls, augment: Augment | None) -> Augment | None:
        """``augment`` merges into the recipe's key by key, so ``{}`` would change nothing."""
        if augment is not None and not augment.model_fields_set:
            raise ValueError(
                "{} sets no key: null keeps the recipe's augmentation, and {rotation: 0, "
                "translation: 0, scale: 0, elastic: 0} turns it off"
            )
        return augment


class ModelParams(Section):
    """The `model` section: which architecture, with its training recipe, from the zoo."""

    arch: Literal[ARCHITECTURES] = "bncnn"


class EvaluateParams(Section):
    """The `evaluate` section: batch size and the size of the worst-case reports."""

    batch_size: Count = 1000
    pair_gallery_size: Annotated[int, Field(gt=0, le=MAX_GALLERY)] = 24  # the pair's mistakes shown
    confident_mistakes: Annotated[int, Field(gt=0, le=MAX_GALLERY)] = 24  # top-k by probability
    calibration_bins: Annotated[int, Field(gt=0, le=1000)] = 15  # expected calibration error


class ActivationsParams(Section):
    """The `activations` section: which test images to explain, and the pictures' sizes."""

    worst_cases: Annotated[int, Field(ge=0)] = 8  # most confident mistakes (from evaluate)
    typical: bool = True  # one typical image per class (from evaluate)
    image_ids: list[str] = []  # explicit test image ids, e.g. [test-000123]
    panel_image: str | None = None  # the image of the feature-map panels (null: first chosen)
    barcode_images: Annotated[int, Field(ge=1, le=100)] = 12  # test images per class in barcodes
    max_channels: Annotated[int, Field(ge=1, le=256)] = 32  # channels drawn per layer


class ReportParams(Section):
    """The `report` section: what the assembled report shows."""

    title: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_one_line)] = (
        "digitpipe run report"
    )


class TrackParams(Section):
    """The `track` section: MLflow tracking and the model registry."""

    enabled: bool = True
    # null: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow.db (absolute, so queued DVC
    # experiments, which run in a temporary copy, still log to the repo's store).
    tracking_uri: str | None = None
    experiment: str = Field("digitpipe", min_length=1)
    registered_model: str = Field("digitpipe", min_length=1)
    promotion_margin: Annotated[float, Field(ge=0, lt=1)] = 0.0  # accuracy the challenger must add
    promotion_alpha: Annotated[float, Field(gt=0, le=1)] = 0.05  # McNemar p must be below this
    min_accuracy: Annotated[float, Field(ge=0, le=1)] = 0.9  # the first champion's floor
    drift_alpha: Annotated[float, Field(gt=0, le=1)] = 0.01  # drift tests flag below this


class RuntimeParams(Section):
    """The `runtime` section: how this machine runs the stages. It never changes a result, so no
    stage lists it as a DVC dependency (a change reruns nothing)."""

    resume: bool = True  # continue an interrupted training run from its last checkpoint
    progress: Literal["auto", "bar", "lines", "none"] = "auto"


class Params(Section):
    """All of params.yaml."""

    data: DataParams
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    activations: ActivationsParams = ActivationsParams()
    report: ReportParams = ReportParams()
    track: TrackParams = TrackParams()
    runtime: RuntimeParams = RuntimeParams()

    @field_validator("train")
    @classmethod
    def _recipe_of_the_arch(cls, train: TrainParams, info: ValidationInfo) -> TrainParams:
        model = info.data.get("model")  # absent when the model section is itself invalid
        if model is not None and train.recipe not in (None, model.arch):
            arch = model.arch
            raise ValueError(
                f"holds the '{train.recipe}' recipe (train.recipe) but model.arch is '{arch}'; "
                f"switch architectures with `dvc exp run -S model={arch}`, which sets model.arch "
                f"with {arch}'s recipe (add -S train.<key>=... to change a key of it)"
            )
        return train


MAX_PARAMS_BYTES = 2**20  # params.yaml is a few KB; a bigger file is refused unread
MAX_YAML_DEPTH = 32  # nesting levels (a params file has about 4)
MAX_YAML_NODES = 100_000  # values once YAML aliases are expanded: an alias bomb stops here
MAX_ERRORS = 20  # validation errors listed in one message
ECHO = 80  # characters of a bad value (or key) a message quotes
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _describe(error: ValidationError, source: str) -> str:
    """One line per bad key (the first MAX_ERRORS), quoting at most ECHO characters of input."""
    items = error.errors()
    lines = [f"{source}: invalid parameters; fix these keys:"]
    lines += [f"  - {_explain(item)}" for item in items[:MAX_ERRORS]]
    if len(items) > MAX_ERRORS:
        lines.append(f"  ... and {len(items) - MAX_ERRORS} more")
    return "\n".join(lines)


def _explain(item: dict) -> str:
    """One validation error as a line; an unknown key (usually a typo) with the nearest keys."""
    if item["type"] == "string_type" and isinstance(item["input"], int | float):
        # YAML reads 7, 1.5, true and null unquoted as numbers, booleans and nothing.
        value = item["input"]
        written = str(value).lower() if isinstance(value, bool) else value
        return f"{invalid_field(item, ECHO)}; quote it to make it text: '{written}'"
    if item["type"] != "extra_forbidden":
        return invalid_field(item, ECHO)
    *path, key = (excerpt(part, ECHO, quote=False) for part in item["loc"])
    section = ".".join(path)
    known = list(_section_at(path).model_fields)
    close = _nearest(key, known)
    where = f"not a key of {section}" if section else "not a section of the parameters"
    prefix = f"{section}." if section else ""
    if close:
        return f"{prefix}{key}: {where}; did you mean {' or '.join(prefix + k for k in close)}?"
    return f"{prefix}{key}: {where}; its keys are {', '.join(known)}"


def _nearest(key: str, known: list[str]) -> list[str]:
    """The known keys ``key`` most likely misspells, or abbreviates by initials (learning_rate:
    lr, which difflib alone finds too different)."""
    initials = {name: "".join(word[:1] for word in name.split("_")) for name in [key, *known]}
    short = [name for name in known if key == initials[name] or name == initials[key]]
    close = difflib.get_close_matches(key, known, n=3)
    return list(dict.fromkeys(short + close))


def _section_at(path: list[str]) -> type[BaseModel]:
    """The Section model at ``path`` in Params, e.g. ["data", "limit"] -> Limits."""
    model: type[BaseModel] = Params
    for key in path:
        annotation = model.model_fields[key].annotation
        model = next(
            kind
            for kind in (annotation, *get_args(annotation))
            if isinstance(kind, type) and issubclass(kind, BaseModel)
        )
    return model


def parse_params(raw: dict, source: str = "params") -> Params:
    """Validate a params mapping; raise DigitpipeError naming every bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise DigitpipeError(_describe(exc, source)) from None


def load_params(path: str | os.PathLike = PARAMS_FILE) -> Params:
    """Read and validate params.yaml: a regular file of at most MAX_PARAMS_BYTES of UTF-8 YAML,
    nested at most MAX_YAML_DEPTH deep, at most MAX_YAML_NODES values once aliases expand."""
    path = Path(path)
    raw = _parse_yaml(path, _read_text(path))
    if not isinstance(raw, dict):
        raise DigitpipeError(f"{path}: expected a mapping of sections (data, train, ...).")
    return parse_params(raw, str(path))


def _read_text(path: Path) -> str:
    """The text of ``path``: a regular file (checked before opening it) of at most
    MAX_PARAMS_BYTES of UTF-8."""
    data = read_bounded(path, MAX_PARAMS_BYTES, "parameters are a YAML file of a few KB.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DigitpipeError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save the file as UTF-8."
        ) from None


def _parse_yaml(path: Path, text: str) -> object:
    """``text`` as YAML (safe loader), refusing deep nesting and alias bombs before building."""
    try:
        _check_depth(path, text)
        loader = YAML_LOADER(text)
        try:
            node = loader.get_single_node()
            if node is not None and _expands_beyond(node, MAX_YAML_NODES):
                raise DigitpipeError(
                    f"{path}: YAML aliases (*name) expand the file to more than "
                    f"{MAX_YAML_NODES:,} values; write the values out instead."
                )
            if node is None:
                return None
            _check_unique_keys(path, node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a value YAML cannot build
        raise DigitpipeError(f"{path}: not valid YAML: {excerpt(exc, 500, quote=False)}") from None


def _check_depth(path: Path, text: str) -> None:
    """Refuse YAML nested deeper than MAX_YAML_DEPTH, from the parser's events (before any
    recursive composing)."""
    depth = 0
    for event in yaml.parse(text, Loader=YAML_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise DigitpipeError(
                    f"{path}: YAML nested more than {MAX_YAML_DEPTH} levels deep; parameters "
                    "are a few levels of sections and keys."
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_unique_keys(path: Path, root: yaml.Node) -> None:
    """Refuse a key given twice in one mapping: YAML loaders keep the last silently, so an
    edit pasted above an old value would not take effect."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Node] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    seen = first.setdefault(key.value, key)
                    if seen is not key:
                        raise DigitpipeError(
                            f"{path}: key {excerpt(key.value)} appears twice in one section "
                            f"(lines {seen.start_mark.line + 1} and {key.start_mark.line + 1}); "
                            "keep one."
                        )
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _expands_beyond(root: yaml.Node, limit: int) -> bool:
    """Whether ``root`` has more than ``limit`` nodes once aliases are expanded (an alias
    counts its whole target again); stops after ``limit`` steps."""
    stack, seen = [root], 0
    while stack:
        seen += 1
        if seen > limit:
            return True
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return False
