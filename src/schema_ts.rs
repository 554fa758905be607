//! JSON Schema to the TypeScript-like signatures Harmony puts in the `# Tools` section.
//!
//! The output matches openai-harmony 0.0.8 byte for byte (the golden vectors in
//! `third_party/harmony/` pin every rule), including its quirks: `anyOf`, `allOf`, `$ref`,
//! `const` and `type: "null"` degrade to `any`; a string default renders quoted except on an
//! enum; `oneOf` renders one ` | ` line per variant; object descriptions are comments.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::chat::ToolNamespaceConfig;

fn is_nonempty_enum(schema: &Value) -> bool {
    schema.get("enum").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn is_nullable(v: &Value) -> bool {
    v.get("nullable").and_then(Value::as_bool).unwrap_or(false)
}

/// Appends ` | null` to a variant's type when it is `nullable` and does not say null already.
fn with_nullable(variant: &Value, ty: String) -> String {
    if is_nullable(variant) && !ty.contains("null") {
        ty + " | null"
    } else {
        ty
    }
}

/// How a `default` reads inside a comment.
#[derive(Clone, Copy)]
enum DefaultStyle {
    /// Strings quoted unless the schema is an enum; enum strings as JSON (quoted, escaped).
    TopLevelVariant,
    /// Strings quoted unless the schema is an enum; enum strings bare.
    Property,
}

fn default_text(schema: &Value, default: &Value, style: DefaultStyle) -> String {
    match (default.as_str(), is_nonempty_enum(schema), style) {
        (Some(s), false, _) => format!("default: \"{s}\""),
        (Some(s), true, DefaultStyle::Property) => format!("default: {s}"),
        _ => format!("default: {default}"),
    }
}

/// Converts one schema to its TypeScript form; `indent` prefixes nested lines.
pub fn to_typescript(schema: &Value, indent: &str) -> String {
    if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        return one_of_inline(variants, indent);
    }
    if let Some(types) = schema.get("type").and_then(Value::as_array) {
        let names: Vec<&str> = types
            .iter()
            .filter_map(Value::as_str)
            .map(|t| if t == "integer" { "number" } else { t })
            .collect();
        if !names.is_empty() {
            return names.join(" | ");
        }
    }
    match str_field(schema, "type") {
        Some("object") => object(schema, indent),
        Some("string") => {
            let names: Vec<String> = schema
                .get("enum")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(|s| format!("\"{s}\"")).collect())
                .unwrap_or_default();
            if names.is_empty() {
                "string".into()
            } else {
                names.join(" | ")
            }
        }
        Some("number") | Some("integer") => "number".into(),
        Some("boolean") => "boolean".into(),
        Some("array") => match schema.get("items") {
            Some(items) => format!("{}[]", to_typescript(items, indent)),
            None => "Array<any>".into(),
        },
        _ => "any".into(),
    }
}

/// A `oneOf` that is not a property: one `\n{indent} | type // comments` line per variant.
fn one_of_inline(variants: &[Value], indent: &str) -> String {
    let mut out = String::new();
    let inner = format!("{indent}   ");
    for variant in variants {
        out.push('\n');
        out.push_str(indent);
        out.push_str(" | ");
        out.push_str(&with_nullable(variant, to_typescript(variant, &inner)));
        let mut comments: Vec<String> = Vec::new();
        if let Some(d) = str_field(variant, "description") {
            comments.push(d.to_string());
        }
        if let Some(def) = variant.get("default") {
            comments.push(default_text(variant, def, DefaultStyle::TopLevelVariant));
        }
        if !comments.is_empty() {
            out.push_str(" // ");
            out.push_str(&comments.join(" "));
        }
    }
    out
}

fn object(schema: &Value, indent: &str) -> String {
    let mut out = String::new();
    if let Some(d) = str_field(schema, "description") {
        out.push_str(&format!("{indent}// {d}\n"));
    }
    out.push_str("{\n");
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (key, prop) in props {
            let optional = if required.contains(&key.as_str()) { "" } else { "?" };
            if let Some(t) = str_field(prop, "title") {
                out.push_str(&format!("{indent}// {t}\n{indent}//\n"));
            }
            let has_one_of = prop.get("oneOf").is_some();
            if !has_one_of {
                if let Some(d) = str_field(prop, "description") {
                    out.push_str(&format!("{indent}// {d}\n"));
                }
            }
            if let Some(examples) = prop.get("examples").and_then(Value::as_array) {
                if !examples.is_empty() {
                    out.push_str(&format!("{indent}// Examples:\n"));
                    for ex in examples.iter().filter_map(Value::as_str) {
                        out.push_str(&format!("{indent}// - \"{ex}\"\n"));
                    }
                }
            }
            if let Some(variants) = prop.get("oneOf").and_then(Value::as_array) {
                one_of_property(&mut out, key, optional, prop, variants, indent);
                continue;
            }
            out.push_str(&format!("{indent}{key}{optional}: "));
            out.push_str(&with_nullable(prop, to_typescript(prop, &format!("{indent}    "))));
            out.push(',');
            if !has_one_of {
                if let Some(def) = prop.get("default") {
                    out.push_str(" // ");
                    out.push_str(&default_text(prop, def, DefaultStyle::Property));
                }
            }
            out.push('\n');
        }
    }
    out.push_str(indent);
    out.push('}');
    out
}

/// A property whose schema is a `oneOf`: comments, `name?:`, then one ` | ` line per variant.
fn one_of_property(
    out: &mut String,
    key: &str,
    optional: &str,
    prop: &Value,
    variants: &[Value],
    indent: &str,
) {
    let prop_desc = str_field(prop, "description");
    let first_desc = variants.first().and_then(|v| str_field(v, "description"));
    let desc_above = prop_desc.is_some() && prop_desc != first_desc;
    if desc_above {
        out.push_str(&format!("{indent}// {}\n", prop_desc.unwrap()));
    }
    if let Some(def) = prop.get("default") {
        out.push_str(&format!("{indent}// {}\n", default_text(prop, def, DefaultStyle::Property)));
    }
    out.push_str(&format!("{indent}{key}{optional}:\n"));
    let inner = format!("{indent}   ");
    for (i, variant) in variants.iter().enumerate() {
        out.push_str(indent);
        out.push_str(" | ");
        out.push_str(&with_nullable(variant, to_typescript(variant, &inner)));
        let mut comments: Vec<String> = Vec::new();
        if !(i == 0 && desc_above) {
            if let Some(d) = str_field(variant, "description") {
                if Some(d) != prop_desc {
                    comments.push(d.to_string());
                }
            }
        }
        if let Some(def) = variant.get("default") {
            comments.push(default_text(variant, def, DefaultStyle::Property));
        }
        if !comments.is_empty() {
            out.push_str(" // ");
            out.push_str(&comments.join(" "));
        }
        out.push('\n');
    }
    out.push_str(indent);
    out.push_str(",\n");
}

/// The `# Tools` section for a set of namespaces (rendered in name order).
pub fn tools_section(namespaces: &BTreeMap<String, ToolNamespaceConfig>) -> String {
    let mut sections = vec!["# Tools".to_string()];
    for ns in namespaces.values() {
        let mut lines = vec![format!("## {}\n", ns.name)];
        if let Some(desc) = &ns.description {
            for line in desc.lines() {
                if ns.tools.is_empty() {
                    lines.push(line.to_string());
                } else {
                    lines.push(format!("// {line}"));
                }
            }
        }
        if !ns.tools.is_empty() {
            lines.push(format!("namespace {} {{\n", ns.name));
            for tool in &ns.tools {
                for line in tool.description.lines() {
                    lines.push(format!("// {line}"));
                }
                match &tool.parameters {
                    Some(p) => lines.push(format!(
                        "type {} = (_: {}) => any;\n",
                        tool.name,
                        to_typescript(p, "")
                    )),
                    None => lines.push(format!("type {} = () => any;\n", tool.name)),
                }
            }
            lines.push(format!("}} // namespace {}", ns.name));
        }
        sections.push(lines.join("\n"));
    }
    sections.join("\n\n")
}

/// Nesting depth of a JSON value (a scalar is 1), computed iteratively.
pub fn json_depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn simple_object() {
        let s = json!({"type":"object","properties":{"loc":{"type":"string","description":"where"},
            "unit":{"type":"string","enum":["c","f"],"default":"c"}},"required":["loc"]});
        assert_eq!(
            to_typescript(&s, ""),
            "{\n// where\nloc: string,\nunit?: \"c\" | \"f\", // default: c\n}"
        );
    }

    #[test]
    fn degrade_to_any() {
        for s in [json!({"anyOf":[{"type":"string"}]}), json!({"$ref":"#/x"}), json!({"type":"null"}), json!(3)] {
            assert_eq!(to_typescript(&s, ""), "any");
        }
        assert_eq!(to_typescript(&json!({"type":["integer","null"]}), ""), "number | null");
        assert_eq!(to_typescript(&json!({"type":"array"}), ""), "Array<any>");
    }

    #[test]
    fn depth() {
        assert_eq!(json_depth(&json!(1)), 1);
        assert_eq!(json_depth(&json!({"a":{"b":[1]}})), 4);
    }
}
