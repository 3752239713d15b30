"""Every key and value of a recipe is checked before a run starts (issue 11, part C)."""

from __future__ import annotations

import pytest

from bregnet.cli import main
from bregnet.engine.config import list_recipes, load_config, validate
from bregnet.errors import ConfigError
from bregnet.metrics import HIGHER_IS_BETTER, METRICS, higher_is_better, selection_metrics


def test_every_metric_has_a_direction_in_the_metrics_table():
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    assert HIGHER_IS_BETTER["rmse"] is False and HIGHER_IS_BETTER["ccc"] is True
    dim = selection_metrics("dimensional")
    assert dim["va_rmse_mean"] is False and dim["valence_rmse"] is False and dim["arousal_rmse"] is False
    assert dim["va_ccc_mean"] is True and dim["valence_sagr"] is True and dim["loss"] is False
    assert "accuracy" not in dim
    cat = selection_metrics("categorical")
    assert cat["accuracy"] and cat["auc_pr_macro"] and cat["loss"] is False and "va_ccc_mean" not in cat
    assert set(selection_metrics("multitask")) == set(cat) | set(dim)
    assert higher_is_better("kappa", "categorical") is True
    with pytest.raises(KeyError, match="accuracy"):
        higher_is_better("acc", "categorical")


def test_every_shipped_recipe_validates():
    for name in list_recipes():
        validate(load_config(name))


@pytest.mark.parametrize("override, key", [
    # model selection and early stopping
    ("train.select_metric=acuracy", "train.select_metric"),
    ("train.select_metric=valence_accuracy", "train.select_metric"),
    ("train.early_stopping=0", "train.early_stopping"),
    ("train.early_stopping=2.5", "train.early_stopping"),
    ("train.early_stopping=yes", "train.early_stopping"),
    # data.sizes: not a mapping, an unknown split, a bad count
    ("data.sizes=abc", "data.sizes"),
    ("data.sizes={trian: 64}", "data.sizes.trian"),
    ("data.sizes={train: -5}", "data.sizes.train"),
    ("data.sizes={train: many}", "data.sizes.train"),
    ("data.options=abc", "data.options"),
    ("data.split_options={tset: {imbalance: none}}", "data.split_options.tset"),
    ("data.split_options={test: 5}", "data.split_options.test"),
    ("data.name=fer2014", "data.name"),
    ("data.root=[1, 2]", "data.root"),
    ("data.train_split=5", "data.train_split"),
    ("data.val_split=''", "data.val_split"),
    # model
    ("model.name=bregnext51", "model.name"),
    ("model.shortcut=relu", "model.shortcut"),
    ("model.args=abc", "model.args"),
    ("model.args={stages: [[1, 16], [0, 32]]}", "model.args.stages"),
    ("model.args={stages: 4}", "model.args.stages"),
    ("model.args={stem_stride: 3, stages: [[1, 16]]}", "model.args.stem_stride"),
    ("model.args={depth: 3, stages: [[1, 16]]}", "model.args.depth"),
    ("model.args={shortcut: tanh, stages: [[1, 16]]}", "model.args.shortcut"),
    ("model=bregnext50", "model"),
    # train: types and ranges of every kind
    ("train.epochs=1.5", "train.epochs"),
    ("train.epochs=true", "train.epochs"),
    ("train.max_steps=0", "train.max_steps"),
    ("train.max_time_s=-1", "train.max_time_s"),
    ("train.lr=fast", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.lr_decay=0", "train.lr_decay"),
    ("train.lr_decay=1.5", "train.lr_decay"),
    ("train.beta=1", "train.beta"),
    ("train.focal_gamma=-1", "train.focal_gamma"),
    ("train.focal_alpha=[0.5, -1]", "train.focal_alpha"),
    ("train.label_smoothing=1", "train.label_smoothing"),
    ("train.loss=hinge", "train.loss"),
    ("train.weighting=balanced", "train.weighting"),
    ("train.va_loss=l1", "train.va_loss"),
    ("train.augment=maybe", "train.augment"),
    ("train.augment=1", "train.augment"),
    ("train.balanced_sampler=2", "train.balanced_sampler"),
    ("train.soft_labels=sometimes", "train.soft_labels"),
    ("train.channels_last=yes please", "train.channels_last"),
    ("train.compile=on please", "train.compile"),
    ("train.seed=-1", "train.seed"),
    ("train.seed=0.5", "train.seed"),
    ("train.eval_batch_size=0", "train.eval_batch_size"),
    ("train.tta_flip=3", "train.tta_flip"),
    ("train.amp=fp8", "train.amp"),
    ("train=5", "train"),
    ("task=ordinal", "task"),
    ("name=[1]", "name"),
])
def test_bad_recipe_values_raise_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as exc:
        load_config("demo", [override])
    message = str(exc.value)
    assert key in message and "\n" not in message, message


def test_select_metric_error_lists_the_task_metrics():
    with pytest.raises(ConfigError, match="choose one of accuracy, balanced_accuracy"):
        load_config("demo", ["task=categorical", "train.select_metric=acc"])
    cfg = load_config("demo", ["task=dimensional", "train.select_metric=va_rmse_mean"])
    assert cfg["train"]["select_metric"] == "va_rmse_mean"
    assert load_config("demo", ["train.select_metric=loss"])["train"]["select_metric"] == "loss"


def test_sizes_apply_only_to_synthetic():
    assert load_config("demo", ["data.sizes={train: 512}"])["data"]["sizes"]["train"] == 512
    with pytest.raises(ConfigError, match="data.sizes .*only to data.name=synthetic"):
        load_config("bregnext50-fer2013", ["data.sizes={train: 512}"])
    with pytest.raises(ConfigError, match="data.sizes.trian: synthetic has no split 'trian'"):
        load_config("demo", ["data.sizes={trian: 64}"])


def test_cross_checks_between_keys():
    with pytest.raises(ConfigError, match="label_smoothing works only with train.loss=ce"):
        load_config("demo", ["train.loss=focal", "train.label_smoothing=0.1"])
    with pytest.raises(ConfigError, match="focal_alpha"):
        load_config("demo", ["train.loss=focal-official", "train.focal_alpha=[0.5, 0.5]"])
    with pytest.raises(ConfigError, match="bregnext_custom needs model.args.stages"):
        load_config("bregnext50-fer2013", ["model.name=bregnext_custom"])
    ok = load_config("demo", ["train.loss=focal-official", "train.focal_alpha=0.25"])
    assert ok["train"]["loss"] == "focal-official"


def test_valid_values_pass_and_yaml_quirks_are_normalised(tmp_path):
    cfg = load_config("demo", ["train.amp=off", "train.early_stopping=3", "train.soft_labels=true",
                               "train.channels_last=false", "train.max_steps=null"])
    t = cfg["train"]
    assert t["amp"] == "off" and t["early_stopping"] == 3 and t["soft_labels"] is True
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: demo\ntrain:\n  lr: 3e-4\n  focal_alpha: [0.5, 1.0]\n")  # YAML 1.1: text
    cfg = load_config(recipe)
    assert cfg["train"]["lr"] == pytest.approx(3e-4) and isinstance(cfg["train"]["lr"], float)


def test_validate_rejects_missing_and_unknown_keys_in_hand_made_configs():
    cfg = load_config("demo")
    del cfg["train"]["seed"]
    with pytest.raises(ConfigError, match="train.seed' is missing"):
        validate(cfg)
    cfg = load_config("demo")
    cfg["data"]["sizez"] = {}
    with pytest.raises(ConfigError, match="unknown config key 'data.sizez'"):
        validate(cfg)


def test_cli_reports_a_bad_recipe_value_in_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "demo", "train.select_metric=acuracy", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.select_metric" in err[0], err
    assert not (tmp_path / "runs").exists()
