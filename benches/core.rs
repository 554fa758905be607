//! Criterion benchmarks of the Rust core alone (no Python): tokenizer encode, render and
//! parser feed, on inputs shaped like those of `benches/bench.py` (which compares the Python
//! package with openai-harmony and tiktoken).
//!
//! ```text
//! cargo bench --bench core                 # every group
//! cargo bench --bench core -- parser       # one group (a regex on the benchmark names)
//! cargo bench --bench core --no-run        # build only (what CI checks)
//! ```
//!
//! Nothing is read from disk or downloaded: the vocabulary is embedded and the inputs are
//! generated here, deterministically.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use llama_harmony::chat::{
    Author, Content, DeveloperContent, Message, Role, SystemContent, ToolDescription,
    ToolNamespaceConfig,
};
use llama_harmony::parser::{parse_completion, Mode, StreamParser};
use llama_harmony::render::{
    render_conversation_for_completion, RenderCache, RenderConversationConfig,
};
use llama_harmony::tokenizer::{ids, tokenizer, Rank};
use llama_harmony::Limits;

/// A small deterministic generator (xorshift64*), so every run measures the same input.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "weather",
    "the",
    "model",
    "tool",
    "call",
    "answer",
    "city",
    "of",
    "and",
    "Paris",
    "reasoning",
    "is",
    "a",
    "to",
    "with",
    "for",
    "result",
    "user",
    "this",
    "function",
];

/// About `n` bytes of mixed text: prose, code, JSON, CJK and emoji with odd whitespace.
fn mixed_text(n: usize, seed: u64) -> String {
    let mut g = Gen(seed | 1);
    let mut s = String::with_capacity(n + 256);
    while s.len() < n {
        match g.below(10) {
            0..=5 => {
                for i in 0..5 + g.below(20) {
                    s.push_str(if i == 0 { "The " } else { " " });
                    s.push_str(g.pick(WORDS));
                }
                s.push_str(". ");
            }
            6 => {
                let k = g.below(1000);
                s.push_str(&format!(
                    "fn step_{k}(x: u32) -> u32 {{\n    x * {k} + 1 // note\n}}\n"
                ));
            }
            7 => {
                let (a, b) = (g.pick(WORDS), g.pick(WORDS));
                s.push_str(&format!(
                    "{{\"id\": {}, \"name\": \"{a}\", \"tags\": [\"{b}\"]}}\n",
                    g.next() % 1_000_000
                ));
            }
            8 => {
                for _ in 0..5 + g.below(30) {
                    s.push(char::from_u32(0x4E00 + g.below(0x5000) as u32).unwrap_or('中'));
                }
                s.push('。');
            }
            _ => s.push_str("Emoji 😀👍🏽 and café, naïve \t\n\n  "),
        }
    }
    s
}

/// About `len` bytes of `s` from `start`, both ends moved back to character boundaries.
fn piece(s: &str, start: usize, len: usize) -> &str {
    let floor = |mut i: usize| {
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    &s[floor(start)..floor((start + len).min(s.len()))]
}

fn encode_special(text: &str) -> Vec<Rank> {
    tokenizer().encode_with_special(text, |_| true)
}

/// A realistic completion of `n` ids (the prompt ended with `<|start|>assistant`):
/// analysis, a tool call, more analysis, a final answer, over and over.
fn completion(n: usize) -> Vec<Rank> {
    let body = mixed_text(20_000, 11);
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n {
        let chunk = piece(&body, (i * 600) % (body.len() - 600), 600);
        let seg = match i % 3 {
            0 => format!("<|channel|>analysis<|message|>{chunk}<|end|><|start|>assistant"),
            1 => "<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>{\"q\": \"weather in Paris\"}<|call|><|start|>assistant".to_string(),
            _ => format!("<|channel|>final<|message|>{chunk}<|end|><|start|>assistant"),
        };
        out.extend(encode_special(&seg));
        i += 1;
    }
    out.truncate(n);
    out
}

/// A conversation of `n` messages after a system message and a developer message with
/// `tools` function tools: user turns, analysis, tool calls and tool results.
fn conversation(n: usize, tools: usize) -> Vec<Message> {
    let words: Vec<String> = mixed_text(200_000, 3)
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut g = Gen(1);
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look up"},
            "limit": {"type": "integer", "default": 10},
            "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
            "filters": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["query"],
    });
    let functions = ToolNamespaceConfig {
        name: "functions".into(),
        description: None,
        tools: (0..tools)
            .map(|i| ToolDescription {
                name: format!("tool_{i}"),
                description: format!("Tool number {i}: does something useful with its arguments."),
                parameters: Some(schema.clone()),
            })
            .collect(),
    };
    let with = |role: Role, content: Content| Message {
        author: Author::new(role),
        content: vec![content],
        channel: None,
        recipient: None,
        content_type: None,
    };
    let system = SystemContent {
        conversation_start_date: Some("2025-06-01".into()),
        ..SystemContent::default()
    };
    let developer = DeveloperContent {
        instructions: Some("Be helpful.".into()),
        tools: Some([("functions".to_string(), functions)].into_iter().collect()),
    };
    let mut msgs = vec![
        with(Role::System, Content::System(system)),
        with(Role::Developer, Content::Developer(developer)),
    ];
    for i in 0..n {
        let body: Vec<&str> = (0..60)
            .map(|_| words[g.below(words.len() as u64) as usize].as_str())
            .collect();
        let body = body.join(" ");
        msgs.push(match i % 4 {
            0 => Message::text(Role::User, body),
            1 => Message::text(Role::Assistant, body).with_channel("analysis"),
            2 => Message::text(Role::Assistant, "{\"query\": \"x\"}")
                .with_channel("commentary")
                .with_recipient("functions.tool_1")
                .with_content_type("<|constrain|>json"),
            _ => Message {
                author: Author {
                    role: Role::Tool,
                    name: Some("functions.tool_1".into()),
                },
                ..Message::text(Role::Tool, body)
                    .with_recipient("assistant")
                    .with_channel("commentary")
            },
        });
    }
    msgs
}

fn bench_tokenizer(c: &mut Criterion) {
    let tk = tokenizer();
    let mut group = c.benchmark_group("tokenizer");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));

    let text = mixed_text(1_700_000, 7);
    assert_eq!(tk.decode_utf8(&tk.encode_ordinary(&text)).unwrap(), text);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("encode_ordinary/mixed_text_1.7MB", |b| {
        b.iter(|| tk.encode_ordinary(black_box(&text)))
    });

    let long = "a".repeat(16_000);
    group.throughput(Throughput::Bytes(long.len() as u64));
    group.bench_function("encode_ordinary/one_piece_a_x16000", |b| {
        b.iter(|| tk.encode_ordinary(black_box(&long)))
    });

    // (criterion's defaults for the short ones)
    group
        .sample_size(100)
        .measurement_time(Duration::from_secs(5));
    let short = "Hello, world! How are you today?";
    group.throughput(Throughput::Bytes(short.len() as u64));
    group.bench_function("encode_ordinary/short_string", |b| {
        b.iter(|| tk.encode_ordinary(black_box(short)))
    });
    group.bench_function("encode_with_special/short_string_all_allowed", |b| {
        b.iter(|| tk.encode_with_special(black_box(short), |_| true))
    });
    group.finish();
}

fn bench_render(c: &mut Criterion) {
    let limits = Limits::default();
    let convo = conversation(100, 20);
    let render = |cache: Option<&RenderCache>| {
        render_conversation_for_completion(
            black_box(&convo),
            Role::Assistant,
            Some(RenderConversationConfig::default()),
            &limits,
            cache,
        )
        .expect("render")
    };
    let n = render(None).len();
    let mut group = c.benchmark_group("render");
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("conversation_100_messages_20_tools/no_cache", |b| {
        b.iter(|| render(None))
    });
    let cache = RenderCache::default();
    group.bench_function("conversation_100_messages_20_tools/cache", |b| {
        b.iter(|| render(Some(&cache)))
    });
    group.finish();
}

fn bench_parser(c: &mut Criterion) {
    let limits = Limits::default();
    let ids = completion(2_000);
    let role = Some(Role::Assistant);
    let expected = parse_completion(&ids, role, Mode::Lenient, limits).expect("lenient");
    assert!(expected.len() > 3, "{} messages", expected.len());
    let new = || StreamParser::new(role, Mode::Lenient, limits);

    let mut group = c.benchmark_group("parser");
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("feed_lenient/16_id_batches", |b| {
        let mut out = Vec::new();
        b.iter_batched_ref(
            new,
            |p| {
                for chunk in ids.chunks(16) {
                    out.clear();
                    p.feed_into(black_box(chunk), &mut out).expect("lenient");
                }
                out.clear();
                p.finish_into(false, &mut out).expect("lenient");
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("feed_lenient/one_batch", |b| {
        b.iter_batched_ref(
            new,
            |p| p.feed(black_box(&ids)).expect("lenient"),
            BatchSize::SmallInput,
        )
    });
    for mode in [Mode::Lenient, Mode::Strict] {
        group.bench_function(
            format!("process_{}/per_id_with_last_content_delta", mode.as_str()),
            |b| {
                b.iter_batched_ref(
                    || StreamParser::new(role, mode, limits),
                    |p| {
                        for &t in &ids {
                            p.process(black_box(t)).expect("parse");
                            black_box(p.last_content_delta());
                        }
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.bench_function("parse_completion_lenient", |b| {
        b.iter(|| parse_completion(black_box(&ids), role, Mode::Lenient, limits).expect("lenient"))
    });

    let mut headers = Vec::new();
    let header = encode_special("assistant to=functions.some_long_tool_name ");
    for _ in 0..200 {
        headers.push(ids::START);
        headers.extend(&header);
        headers.push(ids::CHANNEL);
        headers.extend(encode_special("commentary json"));
        headers.extend([ids::MESSAGE, ids::END]);
    }
    group.throughput(Throughput::Elements(headers.len() as u64));
    group.bench_function("process_lenient/header_heavy_stream", |b| {
        b.iter_batched_ref(
            || StreamParser::new(None, Mode::Lenient, limits),
            |p| {
                for &t in &headers {
                    p.process(black_box(t)).expect("lenient");
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_tokenizer, bench_render, bench_parser);
criterion_main!(benches);
