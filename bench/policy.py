"""Benchmark of the policy decision engine (pure Python, no Django): `.venv/bin/python bench/policy.py`.

Builds realistic matrices of 10, 1,000 and 10,000 rules (many connectors, actions and
agents; mixed amount, confidence, impact, field, sensitivity, missing-fact, override-rate
and budget conditions; every outcome), then times decisions on random proposals.

Three things are measured per decision, each over the same facts:
  decide       decide() alone. Its trace is lazy: nothing is explained in words until it is read
               (the matching rules' reasons are, they are in `reasons`).
  +trace       decide() and then trace.explain_all(): an entry per rule the index admitted, in
               order, and one per field that excluded the others, counting them.
  +as_dict     decide() and as_dict(), the JSON-ready dict the Django side stores (its trace included).
Then the peers: the same rules in their shape (each names an agent and one or two actions but
no connector, with confidence and amount conditions) decided by our engine, by Cedar (`cedarpy`,
policies parsed once into a PolicySet) and by Casbin (`pycasbin`, an ABAC matcher with the
rule's condition in `eval`), in the same run; it prints ours (decide, decide + trace) beside the
best peer's p50 and the ratio (peer / ours: how many times faster we are). The peers answer
allow/deny with the policies that decided it; ours also writes the whole trace. Install them
with `pip install -e .[bench]`; a peer that is missing is named in the output.
Options: --sizes 10,1000,10000 --decisions 20000 --seed 7 --peers-only
"""

from __future__ import annotations

import argparse
import gc
import json
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


def bench_size(n_rules: int, decisions: int, seed: int) -> None:
    spec = build_matrix(n_rules, seed)
    start = time.perf_counter()
    matrix: CompiledMatrix = compile_matrix(spec)
    compile_ms = (time.perf_counter() - start) * 1000
    facts = random_facts(random.Random(seed + 1), n_rules, decisions)
    candidates = statistics.mean(len(matrix.candidates(f)) for f in facts[:2000])
    outcomes: dict[str, int] = {}
    for f in facts[:2000]:  # warms up, as live traffic would
        decision = decide(f, matrix)
        decision.trace.explain_all()
        outcomes[decision.outcome] = outcomes.get(decision.outcome, 0) + 1
    gc.collect()
    gc.freeze()  # the matrix is long-lived: keep the collector from rescanning it, as a server would after warm-up
    print(f"{n_rules:,} rules: compile {compile_ms:,.1f} ms; {candidates:.1f} candidate rules evaluated per decision;"
          f" outcomes {dict(sorted(outcomes.items()))}")
    full = facts if n_rules <= 1000 else facts[:5000]
    print(report("decide", time_calls(lambda f: decide(f, matrix), facts)))
    print(report("+trace", time_calls(lambda f: decide(f, matrix).trace.explain_all(), full)))
    print(report("+as_dict", time_calls(lambda f: decide(f, matrix).as_dict(), full)))
    stored = sorted(len(json.dumps(decide(f, matrix).as_dict(), default=str)) for f in facts[:1000])
    print(f"  stored decision (JSON, trace included): median {stored[len(stored) // 2]:,} bytes, max {stored[-1]:,}")
    gc.unfreeze()


# ---------------------------------------------------------------------------- the peers' shape

PEER_CALLS = {10: 2000, 1000: 300, 10000: 100}  # a peer call walks every policy: fewer samples keep the run short
PEER_SECONDS = 20.0  # and at most this long per peer and size (at least 5 calls): Casbin takes seconds a call at 10,000


def build_peer_rules(n_rules: int, seed: int) -> list[Rule]:
    """Rules that name an agent and one or two actions but no connector, as Cedar and Casbin policies are written."""
    rng = random.Random(seed)
    _, agents = vocabulary(n_rules)
    rules = []
    for i in range(n_rules):
        outcome = rng.choices(list(OUTCOME_WEIGHTS), weights=list(OUTCOME_WEIGHTS.values()))[0]
        cond: dict = {}
        if rng.random() < 0.5:
            cond["confidence_min"] = rng.choice([0.5, 0.7, 0.9])
        if rng.random() < 0.4:
            low = Decimal(rng.choice([0, 10, 100, 500, 1000]))
            cond.update(currency="USD", amount_min=low)
            if rng.random() < 0.5:
                cond["amount_max"] = low + Decimal(rng.choice([100, 1000, 5000]))
        rules.append(Rule(
            name=f"rule-{i:05d}", outcome=outcome, tiers=(Tier("finance"),) if outcome == "review" else (),
            agents=frozenset([rng.choice(agents)]), actions=frozenset(rng.sample(ACTIONS, rng.randint(1, 2))), **cond,
        ))
    return rules


def peer_facts(rng: random.Random, n_rules: int, count: int) -> list[Facts]:
    _, agents = vocabulary(n_rules)
    facts = []
    for _ in range(count):
        action = rng.choice(ACTIONS)
        money = action in MONEY_ACTIONS
        facts.append(Facts(
            connector=rng.choice(BASE_CONNECTORS), action=action, agent=rng.choice(agents),
            amount=Decimal(rng.randint(1, 300000)) / 100 if money else None, currency="USD" if money else "",
            confidence=round(rng.random(), 2),
        ))
    return facts


def _cents(amount: Decimal) -> int:
    return int(amount * 100)


def cedar_peer(rules: list[Rule]) -> Callable[[Facts], object] | str:
    """One permit policy per rule, ids in rule order; amounts in cents and confidence in percent (Cedar's Long)."""
    try:
        import cedarpy
    except ImportError:
        return "cedarpy is not installed (pip install -e .[bench])"
    policies = []
    for rule in rules:
        actions = ", ".join(f'Action::"{a}"' for a in sorted(rule.actions or ()))
        (agent,) = rule.agents or ()
        when = []
        if rule.confidence_min is not None:
            when.append(f"context.confidence >= {round(rule.confidence_min * 100)}")
        if rule.currency is not None:
            when += ["context.has_amount", f'context.currency == "{rule.currency}"']
            if rule.amount_min is not None:
                when.append(f"context.amount >= {_cents(rule.amount_min)}")
            if rule.amount_max is not None:
                when.append(f"context.amount < {_cents(rule.amount_max)}")
        condition = f" when {{ {' && '.join(when)} }}" if when else ""
        policies.append(f'@id("{rule.name}")\npermit(principal == Agent::"{agent}", action in [{actions}], resource){condition};')
    policy_set = cedarpy.PolicySet.from_str("\n".join(policies))
    entities = cedarpy.Entities.from_json_str("[]")

    def request(facts: Facts) -> dict:
        return {"principal": f'Agent::"{facts.agent}"', "action": f'Action::"{facts.action}"', "resource": 'Proposal::"p"',
                "context": {"confidence": round(facts.confidence * 100), "has_amount": facts.amount is not None,
                            "currency": facts.currency, "amount": _cents(facts.amount) if facts.amount is not None else 0}}

    def authorize(made: dict) -> object:
        result = cedarpy.is_authorized(made, policy_set, entities)
        return result.decision, result.diagnostics.reasons  # the matching policies, Cedar's explanation

    authorize.prepare = request  # type: ignore[attr-defined]  # requests are built outside the timing
    return authorize


def casbin_peer(rules: list[Rule]) -> Callable[[Facts], object] | str:
    """ABAC: one policy line per (agent, action) of a rule, its conditions as the line's eval() expression."""
    try:
        import casbin
    except ImportError:
        return "pycasbin is not installed (pip install -e .[bench])"
    from types import SimpleNamespace

    model = casbin.model.Model()
    model.load_model_from_text(
        "[request_definition]\nr = sub, act, obj\n[policy_definition]\np = sub, act, cond, name\n"
        "[policy_effect]\ne = some(where (p.eft == allow))\n[matchers]\nm = r.sub == p.sub && r.act == p.act && eval(p.cond)\n"
    )
    enforcer = casbin.Enforcer(model)
    lines = []
    for rule in rules:
        when = []
        if rule.confidence_min is not None:
            when.append(f"r.obj.confidence >= {round(rule.confidence_min * 100)}")
        if rule.currency is not None:
            when += ["r.obj.has_amount", f"r.obj.currency == '{rule.currency}'"]
            if rule.amount_min is not None:
                when.append(f"r.obj.amount >= {_cents(rule.amount_min)}")
            if rule.amount_max is not None:
                when.append(f"r.obj.amount < {_cents(rule.amount_max)}")
        (agent,) = rule.agents or ()
        lines += [[agent, action, " && ".join(when) or "True", rule.name] for action in sorted(rule.actions or ())]
    enforcer.add_policies(lines)

    def request(facts: Facts) -> tuple:
        return facts.agent, facts.action, SimpleNamespace(
            confidence=round(facts.confidence * 100), has_amount=facts.amount is not None, currency=facts.currency,
            amount=_cents(facts.amount) if facts.amount is not None else 0)

    def authorize(made: tuple) -> object:
        return enforcer.enforce_ex(*made)  # (allowed, the policy line that decided it)

    authorize.prepare = request  # type: ignore[attr-defined]
    return authorize


def time_budgeted(call: Callable[[object], object], requests: list) -> list[int]:
    clock = time.perf_counter_ns
    deadline = clock() + PEER_SECONDS * 1e9
    samples = []
    for request in requests:
        start = clock()
        call(request)
        samples.append(clock() - start)
        if len(samples) >= 5 and clock() > deadline:
            break
    return samples


def p50_us(samples: list[int]) -> float:
    return sorted(samples)[len(samples) // 2] / 1000


def bench_peers(n_rules: int, decisions: int, seed: int) -> None:
    rules = build_peer_rules(n_rules, seed)
    matrix = compile_matrix(MatrixSpec(version=1, name=f"peers-{n_rules}", default_tiers=(Tier("triage"),),
                                       rules=tuple(rules)))
    facts = peer_facts(random.Random(seed + 2), n_rules, decisions)
    for f in facts[:500]:
        decide(f, matrix).trace.explain_all()
    gc.collect()
    gc.freeze()
    ours = p50_us(time_calls(lambda f: decide(f, matrix), facts))
    traced = p50_us(time_calls(lambda f: decide(f, matrix).trace.explain_all(), facts))
    peers: dict[str, float] = {}
    missing = []
    calls = facts[:PEER_CALLS.get(n_rules, 200)]
    for name, make in (("cedar", cedar_peer), ("casbin", casbin_peer)):
        peer = make(rules)
        if isinstance(peer, str):
            missing.append(peer)
            continue
        made = [peer.prepare(f) for f in calls]  # type: ignore[attr-defined]
        for request in made[:5]:
            peer(request)
        peers[name] = p50_us(time_budgeted(peer, made))  # type: ignore[arg-type]
    gc.unfreeze()
    line = f"  peers' shape, {n_rules:,} rules: ours decide p50 {ours:.1f} us, decide + trace {traced:.1f} us"
    if peers:
        best = min(peers, key=peers.__getitem__)
        shown = ", ".join(f"{name} {us:,.1f} us" for name, us in sorted(peers.items()))
        line += (f"; {shown}; best peer {best}: ours {peers[best] / ours:,.0f}x faster deciding,"
                 f" {peers[best] / traced:,.0f}x with the trace; trace / decide {traced / ours:.2f}")
    print(line)
    for reason in missing:
        print(f"    {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--peers-only", action="store_true", help="only the comparison with Cedar and Casbin")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.peers_only:
        for size in sizes:
            bench_peers(size, args.decisions, args.seed)
        return
    print(f"Python {sys.version.split()[0]}; {args.decisions:,} random proposals per size (5,000 for +trace/+as_dict"
          " at 10,000 rules)")
    print("decide = decision with a lazy trace; +trace = the trace explained;"
          " +as_dict = the stored JSON form, trace included")
    for size in sizes:
        bench_size(size, args.decisions, args.seed)
    print("Against the peers (Cedar, Casbin), the same rules in their shape; p50 per decision:")
    for size in sizes:
        bench_peers(size, args.decisions, args.seed)


if __name__ == "__main__":
    main()
