import pytest

from robustlab.errors import SuiteError, UnknownNameError
from robustlab.registry import Registry
from robustlab.suite import builtin_suites, load_suite, parse_suite


def test_registry_duplicate_and_suggestion():
    r: Registry[int] = Registry("thing")
    r.add("alpha", 1)
    with pytest.raises(ValueError):
        r.add("alpha", 2)
    with pytest.raises(UnknownNameError) as e:
        r.get("alpah")
    assert "alpha" in str(e.value) and "Did you mean" in str(e.value)


def test_builtin_suites_found_and_valid():
    names = builtin_suites()
    assert {"quick", "standard", "full"} <= set(names)
    for n in names:
        s = load_suite(n)
        assert s.entries and len(s.sha256) == 64


@pytest.mark.parametrize(
    "text, msg",
    [
        ("checks: [clean", "not valid YAML"),
        ("checks: []", "non-empty"),
        ("chekcs: [clean]", "unknown key"),
        ("checks: [{check: claen}]", "did you mean 'clean'"),
        ("checks: [{check: clean, params: {ece_binz: 3}}]", "ece_bins"),
        ("checks: [{check: clean, params: {ece_bins: 1}}]", "between 2 and 1000"),
        ("checks: [{check: clean, params: {ece_bins: fifteen}}]", "integer"),
        ("checks: [clean, clean]", "duplicate id"),
    ],
)
def test_suite_validation_errors(text, msg):
    with pytest.raises(SuiteError) as e:
        parse_suite(text)
    assert msg.lower() in str(e.value).lower()


def test_unknown_suite_suggests():
    with pytest.raises(SuiteError) as e:
        load_suite("quik")
    assert "quick" in str(e.value)
