"""Benchmark of the policy decision engine (pure Python, no Django): `.venv/bin/python bench/policy.py`.

Builds realistic matrices of 10, 1,000 and 10,000 rules (many connectors, actions and
agents; mixed amount, confidence, impact, field, sensitivity, missing-fact, override-rate
and budget conditions; every outcome), then times decisions on random proposals.

Three things are measured per decision, each over the same facts:
  decide       decide() alone. Its trace is complete but lazy: no rule is explained in words
               until the trace is read (the matching rules' reasons are, they are in `reasons`).
  +trace       decide() and then trace.explain_all(): every rule's entry, in order, ready to read.
  +as_dict     decide() and as_dict(), the JSON-ready dict the Django side stores (full trace).
Traces are timed warm: the first full trace for a connector builds that connector's shared
template of index-miss entries, a one-off cost printed separately ("first full trace").
Options: --sizes 10,1000,10000 --decisions 20000 --seed 7
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies.engine import (  # noqa: E402
    Budget, CompiledMatrix, Facts, MatrixSpec, Rule, Tier, compile_matrix, decide,
)

BASE_CONNECTORS = ["crm", "helpdesk", "email", "billing", "erp", "shop", "hr", "calendar"]
ACTIONS = [
    "update", "add_note", "refund", "credit", "discount", "send_email", "delete", "close", "reopen", "tag",
    "merge", "assign", "export", "cancel", "create", "archive", "escalate", "reply", "invoice", "rename",
]
MONEY_ACTIONS = ["refund", "credit", "discount", "invoice", "cancel"]
GROUPS = ["finance", "support", "sales", "triage", "legal", "security", "ops", "billing-team"]
FIELDS = ["email", "phone", "name", "address", "iban", "status", "notes", "tags", "owner", "plan", "price", "body"]
SENSITIVE = frozenset({"iban", "email", "phone", "address"})
TARGETS = ["contact", "ticket", "order", "invoice", "account", "message"]
CURRENCIES = ["USD", "USD", "USD", "EUR"]
OUTCOME_WEIGHTS = {"auto": 30, "review": 45, "triage": 15, "block": 10}


def vocabulary(n_rules: int) -> tuple[list[str], list[str]]:
    """Connectors and agents grow with the matrix, as they would in a real deployment."""
    connectors = BASE_CONNECTORS + [f"conn-{i:03d}" for i in range(max(0, n_rules // 100 - len(BASE_CONNECTORS)))]
    agents = [f"agent-{i:03d}" for i in range(max(10, n_rules // 50))]
    return connectors, agents


def random_tiers(rng: random.Random) -> tuple[Tier, ...]:
    groups = rng.sample(GROUPS, rng.choice([1, 1, 1, 2]))
    return tuple(
        Tier(group=g, required=rng.choice([1, 1, 2]), mode=rng.choice(["any", "any", "all"]),
             sla_minutes=rng.choice([60, 240, 480]), bulk_allowed=rng.random() < 0.2)
        for g in groups
    )


def random_scope(rng: random.Random, connectors: list[str], agents: list[str], i: int, n: int) -> dict:
    """Most rules are specific to a connector and a few actions; a handful apply across connectors or globally."""
    if i < min(10, n // 10 + 1):
        return {}  # global policy rules
    if i < min(40, n // 5 + 1):
        return {"actions": frozenset(rng.sample(ACTIONS, rng.randint(1, 2)))}
    scope = {"connectors": frozenset([rng.choice(connectors)])}
    roll = rng.random()
    if roll < 0.8:
        scope["actions"] = frozenset(rng.sample(ACTIONS, rng.randint(1, 3)))
    if roll > 0.7:
        scope["agents"] = frozenset(rng.sample(agents, rng.randint(1, 3)))
    return scope


def random_conditions(rng: random.Random, budgets: list[str]) -> dict:
    cond: dict = {}
    if rng.random() < 0.4:
        low = Decimal(rng.choice([0, 10, 100, 500, 1000]))
        cond.update(currency=rng.choice(CURRENCIES), amount_min=low)
        if rng.random() < 0.5:
            cond["amount_max"] = low + Decimal(rng.choice([100, 1000, 5000]))
    if rng.random() < 0.5:
        low = rng.choice([0.5, 0.7, 0.9])
        cond["confidence_min" if rng.random() < 0.5 else "confidence_max"] = low
    if rng.random() < 0.3:
        cond["impacts"] = frozenset(rng.sample(["none", "low", "medium", "high"], rng.randint(1, 2)))
    if rng.random() < 0.2:
        cond["target_types"] = frozenset(rng.sample(TARGETS, 2))
    if rng.random() < 0.2:
        cond["fields_any"] = frozenset(rng.sample(FIELDS, 2))
    if rng.random() < 0.1:
        cond["touches_sensitive"] = True
    if rng.random() < 0.1:
        cond["missing_facts"] = True
    if rng.random() < 0.1:
        cond["override_rate_min"] = rng.choice([0.2, 0.3, 0.5])
    if rng.random() < 0.05:
        cond["budget_exceeded"] = rng.choice(budgets)
    return cond


def build_matrix(n_rules: int, seed: int) -> MatrixSpec:
    rng = random.Random(seed)
    connectors, agents = vocabulary(n_rules)
    budgets = tuple(
        Budget(name=f"budget-{i}", metric=rng.choice(["amount", "count"]), cap=Decimal(rng.choice([10, 1000, 5000])),
               window_minutes=1440, actions=frozenset(rng.sample(MONEY_ACTIONS, 2)))
        for i in range(5)
    )
    rules = []
    for i in range(n_rules):
        outcome = rng.choices(list(OUTCOME_WEIGHTS), weights=list(OUTCOME_WEIGHTS.values()))[0]
        rules.append(Rule(
            name=f"rule-{i:05d}", outcome=outcome, tiers=random_tiers(rng) if outcome == "review" else (),
            **random_scope(rng, connectors, agents, i, n_rules), **random_conditions(rng, [b.name for b in budgets]),
        ))
    return MatrixSpec(
        version=1, name=f"bench-{n_rules}", default_tiers=(Tier("triage"),), rules=tuple(rules),
        sensitive_fields=SENSITIVE, required_facts=("target", "changes", "rationale"), budgets=budgets,
    )


def random_facts(rng: random.Random, n_rules: int, count: int) -> list[Facts]:
    connectors, agents = vocabulary(n_rules)
    facts = []
    for _ in range(count):
        action = rng.choice(ACTIONS)
        money = action in MONEY_ACTIONS
        facts.append(Facts(
            connector=rng.choice(connectors), action=action, agent=rng.choice(agents),
            target_type=rng.choice(TARGETS), amount=Decimal(rng.randint(1, 300000)) / 100 if money else None,
            currency=rng.choice(CURRENCIES) if money else "", confidence=round(rng.random(), 2),
            customer_impact=rng.choice(["none", "low", "medium", "high"]), fields=frozenset(rng.sample(FIELDS, 2)),
            override_rate=rng.choice([None, 0.1, 0.4]),
            usage={f"budget-{i}": Decimal(rng.randint(0, 6000)) for i in range(5)} if money else {},
            present=frozenset(rng.sample(["target", "changes", "rationale", "evidence"], rng.randint(2, 4))),
        ))
    return facts


def time_calls(call: Callable[[Facts], object], facts: list[Facts]) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for f in facts:
        start = clock()
        call(f)
        samples.append(clock() - start)
    return samples


def report(label: str, samples: list[int]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] / 1000
    p99 = ordered[int(len(ordered) * 0.99)] / 1000
    rate = len(samples) / (sum(samples) / 1e9)
    return f"  {label:<9} {rate:>12,.0f} decisions/s   p50 {p50:>9.1f} us   p99 {p99:>9.1f} us"


def cold_trace_ms(spec: MatrixSpec, facts: list[Facts]) -> float:
    """Cost of the first full trace for a connector: it builds that connector's shared template."""
    matrix = compile_matrix(spec)
    samples = []
    for f in {f.connector: f for f in facts}.values():
        decision = decide(f, matrix)
        start = time.perf_counter_ns()
        decision.trace.explain_all()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e6


def bench_size(n_rules: int, decisions: int, seed: int) -> None:
    spec = build_matrix(n_rules, seed)
    start = time.perf_counter()
    matrix: CompiledMatrix = compile_matrix(spec)
    compile_ms = (time.perf_counter() - start) * 1000
    facts = random_facts(random.Random(seed + 1), n_rules, decisions)
    candidates = statistics.mean(len(matrix.candidates(f)) for f in facts[:2000])
    outcomes: dict[str, int] = {}
    for f in facts[:2000]:  # also warms the per-connector trace templates, as live traffic would
        decision = decide(f, matrix)
        decision.trace.explain_all()
        outcomes[decision.outcome] = outcomes.get(decision.outcome, 0) + 1
    gc.collect()
    gc.freeze()  # the matrix is long-lived: keep the collector from rescanning it, as a server would after warm-up
    print(f"{n_rules:,} rules: compile {compile_ms:,.1f} ms; {candidates:.1f} candidate rules evaluated per decision;"
          f" first full trace per connector {cold_trace_ms(spec, facts[:2000]):.2f} ms (builds its template);"
          f" outcomes {dict(sorted(outcomes.items()))}")
    full = facts if n_rules <= 1000 else facts[:5000]
    print(report("decide", time_calls(lambda f: decide(f, matrix), facts)))
    print(report("+trace", time_calls(lambda f: decide(f, matrix).trace.explain_all(), full)))
    print(report("+as_dict", time_calls(lambda f: decide(f, matrix).as_dict(), full)))
    gc.unfreeze()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; {args.decisions:,} random proposals per size (5,000 for +trace/+as_dict"
          " at 10,000 rules)")
    print("decide = decision with a lazy (complete on access) trace; +trace = every rule explained;"
          " +as_dict = the stored JSON form, full trace included")
    for size in (int(s) for s in args.sizes.split(",")):
        bench_size(size, args.decisions, args.seed)


if __name__ == "__main__":
    main()
