"""verify --model: a difference inside a documented modelling limit is counted apart."""
from refactor.verify.fidelity import FidelityReport, limit_of


def test_a_difference_in_an_mbec_episode_is_a_modelling_limit():
    entry = {"ev": "nested_entry", "vmx": True, "tdp": True}
    assert limit_of([{"ev": "reset"}, entry, {"ev": "translate"}]) is None
    assert limit_of([{"ev": "reset"}, dict(entry, mbec=True), {"ev": "translate"}]) \
        == "MBEC is not modelled"


def test_the_report_keeps_limited_differences_apart_from_the_failing_ones():
    r = FidelityReport("t", 1, events=10, differences=0, limited=3)
    assert r.as_dict()["differences"] == 0 and r.as_dict()["limited"] == 3
    assert "3 more inside documented modelling limits" in r.text()
