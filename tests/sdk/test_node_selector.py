import pytest
from pydantic import ValidationError

from chutes import gpus
from chutes.chute import CompatibilityWarning, NodeSelector


def error_text(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(exc.value)


def test_default_selector_takes_every_schedulable_model_and_prices_the_cheapest() -> None:
    sel = NodeSelector()
    expected = sorted(g.id for g in gpus.CATALOG.values() if g.schedulable and g.vram_gb >= 16)
    assert sel.eligible_gpus == expected
    assert "mi300x" not in sel.eligible_gpus
    assert sel.hourly_price_usd == pytest.approx(0.20)  # a4000


def test_must_show_selector() -> None:
    sel = NodeSelector(gpu_count=2, min_vram_gb_per_gpu=80, include=["a100", "h100", "l40s"])
    assert sel.eligible_gpus == ["a100", "h100"]  # l40s has 48 GB
    assert sel.hourly_price_usd == pytest.approx(2 * 1.20)


def test_worked_example_of_the_facts_file() -> None:
    sel = NodeSelector(gpu_count=1, min_vram_gb_per_gpu=80)
    assert {"a100", "a100_sxm", "h100", "h100_nvl", "h100_sxm", "h800", "h20", "h200"} <= set(sel.eligible_gpus)
    assert sel.hourly_price_usd == pytest.approx(0.60)  # h20


def test_include_and_exclude_are_case_insensitive_and_deduplicated() -> None:
    sel = NodeSelector(include=["A100", " h100 ", "a100"], exclude=["H100"], min_vram_gb_per_gpu=80)
    assert sel.include == ["a100", "h100"]
    assert sel.exclude == ["h100"]
    assert sel.eligible_gpus == ["a100"]


def test_unknown_id_lists_the_valid_ones() -> None:
    with pytest.raises(ValidationError) as exc:
        NodeSelector(include=["a1000"])
    text = error_text(exc)
    assert "unknown GPU id 'a1000' (did you mean 'a100'?)" in text
    assert "only on the GPU models of its catalog" in text  # the rule
    assert "use one of: 3090, 4090" in text and "h100_sxm" in text and "(or leave it out)" in text  # the fix
    with pytest.raises(ValidationError, match="unknown GPU id 'rtx9090'"):
        NodeSelector(exclude=["rtx9090"])


def test_retired_models_may_be_excluded_but_not_included() -> None:
    sel = NodeSelector(exclude=["K80", "p100"])
    assert sel.exclude == ["k80", "p100"]
    assert sel.eligible_gpus == NodeSelector().eligible_gpus
    with pytest.raises(ValidationError, match="'t4' is retired"):
        NodeSelector(include=["t4"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"include": []}, "include is empty"),
        ({"include": ["a100"], "exclude": ["A100"]}, "exclude=['a100'] removes every GPU model of include=['a100']"),
        ({"exclude": gpus.all_ids()}, "removes every GPU model of the catalog"),
        ({"include": ["4090", "l4"], "min_vram_gb_per_gpu": 48}, "no GPU model with at least 48 GB VRAM among"),
        ({"max_hourly_price_per_gpu": 0.1}, "below every eligible model (cheapest is a4000 at $0.20/h)"),
        ({"include": ["mi300x"]}, "mi300x cannot be scheduled"),
    ],
)
def test_empty_eligible_set_says_which_rule_emptied_it(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        NodeSelector(**kwargs)  # type: ignore[arg-type]
    assert message in error_text(exc)


def test_price_cap_keeps_models_at_or_below_it() -> None:
    sel = NodeSelector(min_vram_gb_per_gpu=80, max_hourly_price_per_gpu=1.5)
    assert sel.eligible_gpus == ["a100", "a100_sxm", "h20", "h800"]
    assert all(gpus.CATALOG[g].hourly_usd <= 1.5 for g in sel.eligible_gpus)
    assert sel.hourly_price_usd == pytest.approx(0.60)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gpu_count": 0},
        {"gpu_count": 9},
        {"min_vram_gb_per_gpu": 15},
        {"min_vram_gb_per_gpu": 141},
        {"max_hourly_price_per_gpu": 0},
        {"max_hourly_price_per_gpu": 10},
    ],
)
def test_bounds(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        NodeSelector(**kwargs)  # type: ignore[arg-type]


def test_unknown_fields_are_ignored_with_a_warning_naming_the_closest_field() -> None:
    with pytest.warns(CompatibilityWarning) as caught:
        sel = NodeSelector(gpu_count=2, min_vram_gpu_per_gpu=80, require_sxm=True)  # type: ignore[call-arg]
    messages = [str(w.message) for w in caught]
    assert "unknown field 'min_vram_gpu_per_gpu'" in messages[0]
    assert "did you mean 'min_vram_gb_per_gpu'?" in messages[0]
    assert "unknown field 'require_sxm'" in messages[1] and "known fields: exclude, gpu_count" in messages[1]
    assert caught[0].filename == __file__  # the warning points at the user's line
    assert sel == NodeSelector(gpu_count=2)  # the misspelt minimum is not applied: still the default 16 GB
    assert "min_vram_gpu_per_gpu" not in sel.model_dump()


def test_serialized_selector_round_trips_and_computed_fields_are_recomputed() -> None:
    sel = NodeSelector(gpu_count=2, min_vram_gb_per_gpu=80, include=["a100", "h100", "l40s"])
    data = sel.model_dump()
    assert data["eligible_gpus"] == ["a100", "h100"] and data["hourly_price_usd"] == 2.4
    tampered = {**data, "eligible_gpus": ["b200"], "hourly_price_usd": 0.01}
    again = NodeSelector.model_validate(tampered)
    assert again == sel
    assert again.eligible_gpus == ["a100", "h100"] and again.hourly_price_usd == 2.4
