"""Cost accounting: exact pricing maths, typed errors for bad prices, the ledger, experiments."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

import streamkit as sk
from streamkit.cost import (
    HEURISTIC,
    SIM_TOKENIZER,
    Ledger,
    Price,
    PriceTable,
    Unpriced,
    cost_of,
    count_message_tokens,
    count_tokens,
    estimate_cost,
)
from streamkit.errors import PriceTableError, UnpricedModelError, UsageError
from streamkit.events import Usage
from streamkit.experiments import ResponseCache, Router, batching_experiment
from streamkit.metrics import MetricsCollector
from streamkit.result import StreamResult
from streamkit.server import RunningServer
from streamkit.server.textgen import tokenize

TABLE = PriceTable({"m": Price(2.0, 0.5, 8.0, "test")}, library=False)


# -- pricing maths -----------------------------------------------------------------------------


def test_cached_tokens_are_priced_once_at_the_cached_rate() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000, total_tokens=1_500_000,
                  cached_tokens=400_000)  # fmt: skip
    cost = cost_of(usage, "m", TABLE)
    assert (cost.input_tokens, cost.cached_tokens, cost.output_tokens) == (
        600_000,
        400_000,
        500_000,
    )
    assert cost.input_usd == pytest.approx(1.2)  # 600K fresh at $2/M
    assert cost.cached_usd == pytest.approx(0.2)  # 400K cached at $0.5/M, not also at $2/M
    assert cost.output_usd == pytest.approx(4.0)
    assert cost.total_usd == pytest.approx(5.4)
    assert not cost.estimated and cost.source == "test"


def test_sim_models_use_the_bundled_prices() -> None:
    cost = cost_of(Usage(1_000_000, 1_000_000, 2_000_000), "sim-large", PriceTable.default())
    assert cost.total_usd == pytest.approx(2.5 + 10.0)
    assert cost.source == "streamkit.server"


def test_cached_more_than_prompt_is_rejected() -> None:
    with pytest.raises(UsageError, match="cached"):
        cost_of(Usage(10, 0, 10, cached_tokens=11), "m", TABLE)


def test_unknown_model_raises_naming_it_and_the_known_ones() -> None:
    with pytest.raises(UnpricedModelError, match=r"'nope' \(priced here: m\)") as info:
        TABLE.price_for("nope")
    assert info.value.model == "nope" and info.value.known == ["m"]
    assert isinstance(info.value, UsageError)
    with pytest.raises(UnpricedModelError):
        cost_of(Usage(1, 1, 2), "nope", TABLE)


def test_unknown_model_marker_is_explicit_and_falsy() -> None:
    marker = TABLE.price_for("nope", strict=False)
    assert isinstance(marker, Unpriced) and not marker and marker.model == "nope"
    assert "nope" not in TABLE and "m" in TABLE


def test_library_prices_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a price lookup tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    price = PriceTable.default().price_for("gpt-4o-mini")
    assert isinstance(price, Price) and price.source.startswith("genai-prices")
    assert price.input > 0 and price.output > price.input and price.cached_input <= price.input


def test_overrides_win_and_default_cached_rate_to_input() -> None:
    table = PriceTable.default().with_prices({"sim-small": {"input": 1, "output": 3}})
    price = table.price_for("sim-small")
    assert price == Price(1.0, 1.0, 3.0, "user")


# -- bad price files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("neg.json", '{"models": {"a": {"input": -1, "output": 1}}}', r"entry 'a'.*input=-1"),
        ("nan.json", '{"models": {"b": {"input": "cheap", "output": 1}}}', r"entry 'b'.*number"),
        ("eur.json", '{"currency": "EUR", "models": {"c": {"input": 1, "output": 1}}}', "USD"),
        ("eur2.toml", '[models.d]\ninput = 1\noutput = 1\ncurrency = "EUR"\n', r"entry 'd'.*USD"),
        ("bad.json", '{"models": {', "not valid JSON"),
        ("bad.toml", "[models\n", "not valid TOML"),
        ("shape.json", '{"prices": {}}', '"models"'),
        ("missing.json", '{"models": {"e": {"input": 1}}}', r"entry 'e'.*output is missing"),
    ],
)
def test_bad_price_files_name_the_entry_and_the_file(
    tmp_path: Path, name: str, text: str, match: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PriceTableError, match=match) as info:
        PriceTable.from_file(path)
    assert str(path) in str(info.value)


def test_good_price_files_json_and_toml(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(
        '{"currency": "USD", "models": {"x": {"input": 1, "cached_input": 0.1, "output": 4}}}'
    )
    (tmp_path / "p.toml").write_text("[models.y]\ninput = 2\noutput = 6\n")
    table = PriceTable.from_file(tmp_path / "p.json")
    table = PriceTable.from_file(tmp_path / "p.toml", base=table)
    x, y = table.price_for("x"), table.price_for("y")
    assert isinstance(x, Price) and (x.input, x.cached_input, x.output) == (1.0, 0.1, 4.0)
    assert isinstance(y, Price) and (y.input, y.cached_input, y.output) == (2.0, 2.0, 6.0)
    assert str(tmp_path / "p.toml") in y.source


# -- estimation --------------------------------------------------------------------------------


def test_estimates_are_labelled_with_their_tokenizer() -> None:
    text = "Hello, streaming world of internationalization."
    sim = count_tokens(text, "sim-small")
    assert sim.tokens == len(tokenize(text)) and sim.tokenizer == SIM_TOKENIZER and sim.exact
    other = count_tokens(text, "some-model", tokenizer="heuristic")
    assert other.tokenizer == HEURISTIC and not other.exact and other.tokens == 12
    cost = estimate_cost("Hi there", "A reply.", "sim-small")
    assert cost.estimated and cost.tokenizer == SIM_TOKENIZER
    # the server's accounting: 3 per message + 3 priming + the content's tokens
    assert cost.input_tokens == 3 + 3 + len(tokenize("Hi there"))
    assert "estimate" in str(cost)


def test_message_count_matches_the_server(server: RunningServer) -> None:
    prompt = "Count my tokens, please: internationalization!"
    result = sk.Client(server.base_url, model="sim-small").chat_sync(
        prompt, view=None, max_tokens=5
    )
    assert result.usage is not None
    assert count_message_tokens(prompt, "sim-small").tokens == result.usage.prompt_tokens


# -- the ledger --------------------------------------------------------------------------------


def _result(text: str, usage: Usage | None, model: str = "sim-small") -> StreamResult:
    result = StreamResult(model=model, status="completed", usage=usage)
    result._parts.append(text)
    return result


def test_ledger_flags_missing_usage_and_estimates() -> None:
    ledger = Ledger()
    row = ledger.add(_result("One two three.", None), prompt="hi")
    assert row["missing_usage"] and row["estimated"] and not row["disagreement"]
    assert row["completion_tokens_counted"] == len(tokenize("One two three."))
    assert row["output_usd"] > 0  # estimated, never zero
    frame = ledger.df()
    assert frame["completion_tokens_reported"].isna().all()


def test_ledger_flags_disagreement_beyond_the_threshold() -> None:
    text = "word " * 99 + "word"  # 100 tokens by the sim tokenizer
    assert len(tokenize(text)) == 100
    ledger = Ledger(threshold=0.05)
    close = ledger.add(_result(text, Usage(10, 104, 114)), prompt_tokens_estimate=10)
    far = ledger.add(_result(text, Usage(10, 120, 130)), prompt_tokens_estimate=10)
    prompt_off = ledger.add(_result(text, Usage(10, 100, 110)), prompt_tokens_estimate=20)
    assert not close["disagreement"] and far["disagreement"] and prompt_off["disagreement"]
    assert ledger.totals()["disagreement"] == 2


def test_ledger_rejects_unpriced_models() -> None:
    with pytest.raises(UnpricedModelError):
        Ledger().add(_result("x", Usage(1, 1, 2), model="no-such-model-anywhere"))


def test_cost_of_a_retry_against_a_real_fault(server: RunningServer) -> None:
    client = sk.Client(server.base_url, model="sim-small", on_interrupt="restart", resume=False)
    collector = MetricsCollector()
    recorder = collector.track("retried")
    prompt = "Explain retries"
    result = client.chat_sync(
        prompt,
        view=None,
        max_tokens=30,
        seed=3,
        observers=[recorder],
        extra_body={"streamkit": {"faults": [{"kind": "drop", "at": 10, "attempts": 1}]}},
    )
    assert result.ok and result.retries == 1 and result.discarded_tokens == 10
    ledger = Ledger()
    row = ledger.add(result, prompt=prompt, recorder=recorder)
    assert row["discarded_tokens"] == 10
    assert result.usage is not None and row["resent_prompt_tokens"] == result.usage.prompt_tokens
    # discarded tokens at sim-small's output rate, the prompt sent again at its input rate
    assert row["retry_usd"] == pytest.approx((10 * 0.60 + row["resent_prompt_tokens"] * 0.15) / 1e6)
    assert not row["missing_usage"] and not row["disagreement"]
    assert row["total_usd"] == pytest.approx(
        row["input_usd"] + row["output_usd"] + row["retry_usd"]
    )
    # the metrics collector's chunk log counts the same discarded chunks
    chunks = collector.chunks_df()
    assert int((~chunks["kept"]).sum()) == 10
    result.discarded_tokens = 0  # the recorder alone is enough
    assert Ledger().add(result, recorder=recorder)["discarded_tokens"] == 10
    without = Ledger().add(result)  # no recorder: accepted attempts unknown, no prompt re-sent
    assert without["resent_prompt_tokens"] == 0 and without["discarded_tokens"] == 0


# -- experiments -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cache_hit_replays_the_text_without_a_request(server: RunningServer) -> None:
    async with sk.Client(server.base_url, model="sim-small") as client:
        cache = ResponseCache()
        first, hit1 = await cache.chat(client, "Explain caching", max_tokens=20, seed=1)
        before = server.app.stats.requests
        second, hit2 = await cache.chat(
            client, [{"role": "user", "content": "Explain caching"}], max_tokens=20, seed=1
        )
        assert server.app.stats.requests == before  # nothing sent
        assert (hit1, hit2) == (False, True) and second.text == first.text and second.ok
        assert cache.hit_rate == 0.5 and cache.saved_usd > 0 and cache.saved_seconds > 0
        _, hit3 = await cache.chat(client, "Explain caching", max_tokens=20, seed=2)
        assert not hit3 and server.app.stats.requests == before + 1  # another seed: a miss


def test_router_choices() -> None:
    router = Router()
    assert router.route("Say hi") == "sim-small"
    assert router.route("List three colours") == "sim-small"
    assert router.route("Why is the sky blue?") == "sim-large"
    assert router.reason("Compare SSE and WebSocket").startswith("complex")
    long_prompt = "Tell me about " + "colours and shapes " * 10
    assert router.route(long_prompt) == "sim-large"
    assert router.reason(long_prompt).startswith("long")


@pytest.mark.anyio
async def test_batching_changes_the_screen_not_the_bill(server: RunningServer) -> None:
    async with sk.Client(server.base_url, model="sim-small") as client:
        frame = await batching_experiment(client, max_tokens=30)
    assert frame["screen_updates"].nunique() == 2
    assert frame["completion_tokens"].nunique() == 1 and frame["usd"].nunique() == 1
    assert frame["text_sha"].nunique() == 1
