// Sends one small agent trace to watchdog with the OpenTelemetry JS SDK's OTLP/HTTP
// exporter (JSON encoding). Usage: node send_spans.mjs http://127.0.0.1:PORT
import { trace, context, SpanStatusCode } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";

const base = process.argv[2];
const exporter = new OTLPTraceExporter({ url: `${base}/v1/traces` });
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ "service.name": "js-agent" }),
  spanProcessors: [new SimpleSpanProcessor(exporter)],
});
const tracer = provider.getTracer("watchdog-js-test", "1.0.0");

const agent = tracer.startSpan("invoke_agent support-bot", {
  attributes: {
    "gen_ai.operation.name": "invoke_agent",
    "gen_ai.agent.name": "support-bot",
    "gen_ai.conversation.id": "js-session-1",
  },
});
const ctx = trace.setSpan(context.active(), agent);
const chat = tracer.startSpan("chat gpt-4o-mini", {
  attributes: {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.agent.name": "support-bot",
    "gen_ai.conversation.id": "js-session-1",
    "gen_ai.usage.input_tokens": 2000,
    "gen_ai.usage.output_tokens": 300,
  },
}, ctx);
chat.end();
const tool = tracer.startSpan("execute_tool lookup_order", {
  attributes: {
    "gen_ai.operation.name": "execute_tool",
    "gen_ai.tool.name": "lookup_order",
    "gen_ai.tool.call.arguments": JSON.stringify({ order_id: 42 }),
    "gen_ai.agent.name": "support-bot",
    "gen_ai.conversation.id": "js-session-1",
  },
}, ctx);
tool.setStatus({ code: SpanStatusCode.ERROR, message: "order not found" });
tool.end();
agent.end();
await provider.forceFlush();
await provider.shutdown();
console.log(JSON.stringify({ traceId: agent.spanContext().traceId }));
