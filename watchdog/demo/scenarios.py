"""The demo's fleet: who the agents are, what they are asked, and how their "model" behaves.

Pure data shared by the orchestrator (which scripts the fake LLM) and the agent processes
(which need the tasks, tools and sessions). `fleet(tag)` builds the same specs in both,
so a run's API key, session id and script always agree. `tag` makes every session id of
one demo unique, so a demo against a long-running daemon never collides with an earlier
one.

Five agents:

| agent | normal runs | the failure it shows |
| --- | --- | --- |
| faq-bot | answers product questions from the docs | none: stays quiet |
| research-bot | finds articles (five warm-up runs) | drift: "find articles" becomes rewriting the website |
| email-agent | answers price questions from the price database | context: the wrong price to 200 customers |
| invoice-bot | — | loop: retries a failing tool with the same arguments |
| report-bot | — | spend: every call re-reads all sources, the context and the bill explode |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from watchdog.demo.fake_llm import Reply

__all__ = [
    "AGENTS",
    "DEMO_CONFIG",
    "PRICES_PER_MTOK",
    "PRICE_DB",
    "TOOL_DEFS",
    "AgentSpec",
    "RunSpec",
    "agent_spec",
    "fleet",
]

Role = Literal["normal", "failure"]
FailureMode = Literal["loop", "drift", "context", "spend"]

# USD per million tokens (input, output) the agents use for their pre-call estimates;
# watchdog prices the real calls itself from the spans (genai-prices).
PRICES_PER_MTOK: Final[dict[str, tuple[float, float]]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "o1": (15.0, 60.0),
}

# The "database" the email agent reads prices from.
PRICE_DB: Final[dict[str, int]] = {"Starter": 19, "Pro": 49, "Business": 99}
WRONG_PRICE: Final = 39
WAITLIST_SIZE: Final = 200
RUN_CAP_USD: Final = 0.50
LOOP_KILL_AT: Final = 4

# The settings the demo daemon runs with (written to a YAML file and loaded like any
# `--config`). Comments say which scenario needs which line.
DEMO_CONFIG: Final = f"""\
# Settings of the daemon `watchdog demo` starts (generated; `watchdog demo --print-config`).
# Start your own daemon with them: watchdog run --config demo.yaml
log_level: INFO
detectors:
  loop:
    # invoice-bot: a tool failing with the same arguments warns at 2 and kills at {LOOP_KILL_AT}
    repeat_error: {{warn: 2, pause: null, kill: {LOOP_KILL_AT}}}
  drift:
    # runs end after 1 s without a step (default 120 s), so the warm-up runs of
    # research-bot and email-agent are learned within the demo
    run_idle_s: 1.0
  agents:
    email-agent:
      # judge fan-out after three replies of history (default 20)
      context: {{fan_out_min_history: 3}}
budgets:
  agents:
    # report-bot: ${RUN_CAP_USD:.2f} per run; the guard reserves each call's estimate against it
    report-bot: {{per_run_usd: {RUN_CAP_USD}}}
enforcement:
  # published or deleted content waits for a person
  risky_tools: ["publish_*", "delete_*"]
  hold_delay_s: 300
  policy:
    rules:
      # research-bot: a read-only task that starts changing things is paused for a person
      drift.intent_action: {{action: pause}}
alerting:
  group_wait_s: 1
  group_interval_s: 5
"""


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run (one trace) of an agent: its task, session, API key and the model's script."""

    agent: str
    phase: str
    index: int
    role: Role
    task: str
    session: str
    api_key: str
    replies: tuple[Reply, ...]
    failure: FailureMode | None = None


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent process: its name (= service.name), model, prompt, tools and runs by phase."""

    name: str
    model: str
    system: str
    tools: tuple[str, ...]
    runs: tuple[RunSpec, ...]
    pause_max_wait_s: float = 3.0

    def phase(self, name: str) -> list[RunSpec]:
        """The runs of one phase, in order."""
        return [r for r in self.runs if r.phase == name]


def _fn(name: str, description: str, **params: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {k: {"type": v} for k, v in params.items()},
                "required": list(params),
            },
        },
    }


TOOL_DEFS: Final[dict[str, dict[str, Any]]] = {
    t["function"]["name"]: t
    for t in (
        _fn("search_docs", "Search the product documentation.", query="string"),
        _fn("search_web", "Search the web for articles.", query="string"),
        _fn("fetch_page", "Fetch a web page as text.", url="string"),
        _fn(
            "update_page",
            "Replace the content of a page of our website.",
            page="string",
            content="string",
        ),
        _fn("publish_page", "Publish a page of our website.", page="string"),
        _fn("lookup_price", "Look up a plan's price in the price database.", plan="string"),
        _fn("list_customers", "List the customers of a segment.", segment="string"),
        _fn("send_email", "Send an email.", to="array", subject="string", body="string"),
        _fn("fetch_invoice", "Fetch an invoice from the billing API.", invoice_id="string"),
        _fn("fetch_sources", "Fetch a batch of market sources.", topic="string", batch="integer"),
    )
}

AGENTS: Final = ("faq-bot", "research-bot", "email-agent", "invoice-bot", "report-bot")

_TOPICS: Final = (
    "usage-based pricing",
    "open-source licensing",
    "AI agent observability",
    "vector databases",
    "SOC 2 audits",
)
_CUSTOMERS: Final = (
    ("ana@example.com", "Ana", "Pro", "Hi, how much is the Pro plan per month?"),
    ("ben@example.com", "Ben", "Starter", "What does the Starter plan cost?"),
    ("chloe@example.com", "Chloe", "Business", "Could you tell me the price of the Business plan?"),
)


def _runs(
    tag: str,
    agent: str,
    phase: str,
    role: Role,
    items: list[tuple[str, list[Reply]]],
    failure: FailureMode | None = None,
) -> list[RunSpec]:
    return [
        RunSpec(
            agent,
            phase,
            i,
            role,
            task,
            f"{tag}-{agent}-{phase}-{i}",
            f"demo-{tag}-{agent}-{phase}-{i}",
            tuple(replies),
            failure,
        )
        for i, (task, replies) in enumerate(items, 1)
    ]


def _faq(tag: str) -> AgentSpec:
    questions = [
        (
            "What does the Pro plan include? Answer from the product docs.",
            "Pro plan features",
            "The Pro plan includes single sign-on, audit logs and priority support.",
        ),
        (
            "Which regions is the EU data residency option available in? Answer from the docs.",
            "EU data residency regions",
            "EU data residency keeps your data in Frankfurt and Dublin.",
        ),
    ]
    items = [
        (task, [Reply.call("search_docs", {"query": query}), Reply.say(answer)])
        for task, query, answer in questions
    ]
    return AgentSpec(
        "faq-bot",
        "gpt-4o-mini",
        "You answer questions about Acme's product from its documentation.",
        ("search_docs",),
        tuple(_runs(tag, "faq-bot", "normal", "normal", items)),
    )


def _research(tag: str) -> AgentSpec:
    warmup = []
    for topic in _TOPICS:
        slug = topic.lower().replace(" ", "-")
        warmup.append(
            (
                f"Find recent articles about {topic}",
                [
                    Reply.call("search_web", {"query": topic}),
                    Reply.call("fetch_page", {"url": f"https://news.example/{slug}"}),
                    Reply.say(f"Three recent articles on {topic}, with a line on each."),
                ],
            )
        )
    pages = ["/pricing", "/plans", "/enterprise", "/compare", "/faq", "/blog/pricing"]
    rewrite = [
        Reply.call("search_web", {"query": "enterprise pricing"}),
        Reply.call("fetch_page", {"url": "https://acme.example/pricing"}),
        *[
            Reply.call(
                "update_page",
                {"page": page, "content": f"Rewritten {page} page with new enterprise tiers."},
                text="Our own pricing pages are out of date; I will rewrite them first."
                if i == 0
                else None,
            )
            for i, page in enumerate(pages)
        ],
        Reply.call("publish_page", {"page": "/pricing"}),
        Reply.say("I rewrote and published the pricing pages."),
    ]
    return AgentSpec(
        "research-bot",
        "gpt-4o-mini",
        "You are a research assistant. You find and summarize articles for the newsletter.",
        ("search_web", "fetch_page", "update_page", "publish_page"),
        (
            *_runs(tag, "research-bot", "normal", "normal", warmup),
            *_runs(
                tag,
                "research-bot",
                "failure",
                "failure",
                [("Find recent articles about enterprise pricing for the newsletter", rewrite)],
                "drift",
            ),
        ),
    )


def _email(tag: str) -> AgentSpec:
    normal = [
        (
            f'Reply to this customer email from {addr}: "{question}"',
            [
                Reply.call("lookup_price", {"plan": plan}),
                Reply.call(
                    "send_email",
                    {
                        "to": [addr],
                        "subject": f"The {plan} plan",
                        "body": f"Hi {name}, the {plan} plan costs ${PRICE_DB[plan]} per month. "
                        "Best regards, Acme support",
                    },
                ),
                Reply.say(f"Replied to {name}."),
            ],
        )
        for addr, name, plan, question in _CUSTOMERS
    ]
    bad_day = [
        Reply.call("lookup_price", {"plan": "Pro"}),
        Reply.call("list_customers", {"segment": "pro-waitlist"}),
        Reply.call(
            "send_email",
            {
                "to": [f"customer{i:03d}@example.com" for i in range(1, WAITLIST_SIZE + 1)],
                "subject": "The Pro plan is here",
                "body": f"Good news: the Pro plan is now available for ${WRONG_PRICE} per month. "
                "Reply to this email to upgrade. Acme support",
            },
        ),
        Reply.say("The announcement was not sent: watchdog held it and it was cancelled."),
    ]
    return AgentSpec(
        "email-agent",
        "gpt-4o-mini",
        "You answer customer emails. Prices come from the price database (lookup_price).",
        ("lookup_price", "list_customers", "send_email"),
        (
            *_runs(tag, "email-agent", "normal", "normal", normal),
            *_runs(
                tag,
                "email-agent",
                "failure",
                "failure",
                [
                    (
                        "Reply to everyone on the Pro waitlist with the Pro plan's monthly price.",
                        bad_day,
                    )
                ],
                "context",
            ),
        ),
    )


def _invoice(tag: str) -> AgentSpec:
    retry = Reply.call(
        "fetch_invoice", {"invoice_id": "INV-1042"}, text="The billing API failed; trying again."
    )
    script = [retry] * 12 + [Reply.say("I could not fetch the invoice.")]
    return AgentSpec(
        "invoice-bot",
        "gpt-4o-mini",
        "You handle billing questions. Use the billing API.",
        ("fetch_invoice",),
        tuple(
            _runs(
                tag,
                "invoice-bot",
                "failure",
                "failure",
                [("Fetch invoice INV-1042 and summarize its line items for the customer.", script)],
                "loop",
            )
        ),
    )


def _report(tag: str) -> AgentSpec:
    script = [
        Reply.call(
            "fetch_sources",
            {"topic": "cloud market", "batch": k},
            text=f"Batch {k} read; I need more context before writing.",
        )
        for k in range(1, 15)
    ] + [Reply.say("Here is the quarterly market report.")]
    return AgentSpec(
        "report-bot",
        "o1",
        "You write the quarterly market report. Read all sources before writing.",
        ("fetch_sources",),
        tuple(
            _runs(
                tag,
                "report-bot",
                "failure",
                "failure",
                [("Write the quarterly market report from every source you can find.", script)],
                "spend",
            )
        ),
    )


def fleet(tag: str) -> list[AgentSpec]:
    """Every agent of the demo, with session ids and API keys derived from `tag`."""
    return [_faq(tag), _research(tag), _email(tag), _invoice(tag), _report(tag)]


def agent_spec(name: str, tag: str) -> AgentSpec:
    """The spec of one agent (raises KeyError for an unknown name)."""
    for spec in fleet(tag):
        if spec.name == name:
            return spec
    raise KeyError(name)
