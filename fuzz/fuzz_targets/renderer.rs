//! Renderer: arbitrary conversation structures and arbitrary JSON schemas render to ids or a
//! typed error, never a panic; limits hold.
#![no_main]
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use llama_harmony::chat::*;
use llama_harmony::limits::Limits;
use llama_harmony::render::{render_conversation_for_completion, render_conversation_for_training, RenderConversationConfig};

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (a, b) = data.split_at(n);
    *data = b;
    a
}

fn byte(data: &mut &[u8]) -> u8 {
    take(data, 1).first().copied().unwrap_or(0)
}

fn text(data: &mut &[u8]) -> String {
    let n = byte(data) as usize % 40;
    String::from_utf8_lossy(take(data, n)).into_owned()
}

fn opt_text(data: &mut &[u8]) -> Option<String> {
    if byte(data) % 3 == 0 { None } else { Some(text(data)) }
}

fuzz_target!(|input: &[u8]| {
    // The first part of the input, up to a NUL, is a JSON Schema candidate.
    let split = input.iter().position(|&b| b == 0).unwrap_or(input.len());
    let schema: Option<serde_json::Value> = serde_json::from_slice(&input[..split]).ok();
    let mut data = &input[split.min(input.len())..];
    let mut messages = Vec::new();
    let roles = [Role::System, Role::Developer, Role::User, Role::Assistant, Role::Tool];
    for _ in 0..(byte(&mut data) % 8) {
        let role = roles[byte(&mut data) as usize % 5];
        let kind = byte(&mut data) % 4;
        let content = match kind {
            0 => Content::System(SystemContent {
                model_identity: opt_text(&mut data),
                reasoning_effort: [None, Some(ReasoningEffort::Low), Some(ReasoningEffort::High)][byte(&mut data) as usize % 3],
                conversation_start_date: opt_text(&mut data),
                knowledge_cutoff: opt_text(&mut data),
                channel_config: Some(ChannelConfig { valid_channels: vec![text(&mut data)], channel_required: byte(&mut data) % 2 == 0 }),
                tools: None,
            }),
            1 => {
                let mut tools = BTreeMap::new();
                let name = text(&mut data);
                tools.insert(
                    name.clone(),
                    ToolNamespaceConfig {
                        name,
                        description: opt_text(&mut data),
                        tools: vec![ToolDescription { name: text(&mut data), description: text(&mut data), parameters: schema.clone() }],
                    },
                );
                Content::Developer(DeveloperContent { instructions: opt_text(&mut data), tools: Some(tools) })
            }
            _ => Content::Text(text(&mut data)),
        };
        messages.push(Message {
            author: Author { role, name: opt_text(&mut data) },
            content: vec![content],
            channel: opt_text(&mut data),
            recipient: opt_text(&mut data),
            content_type: opt_text(&mut data),
        });
    }
    let limits = Limits { max_prompt_tokens: 20_000, ..Limits::default() };
    for cfg in [None, Some(RenderConversationConfig { auto_drop_analysis: true })] {
        if let Ok(ids) = render_conversation_for_completion(&messages, Role::Assistant, cfg, &limits, None) {
            assert!(ids.len() <= 20_000);
            assert_eq!(ids[ids.len() - 2], 200_006);
        }
        let _ = render_conversation_for_training(&messages, cfg, &limits, None);
    }
    if let Some(s) = &schema {
        let _ = llama_harmony::schema_ts::to_typescript(s, "");
    }
});
