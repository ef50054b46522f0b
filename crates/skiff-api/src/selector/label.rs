//! Label selectors: `app=web,tier in (a,b),!canary`, parsed with the grammar and error
//! messages of `apimachinery/pkg/labels/selector.go`, or converted from `metav1.LabelSelector`.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use crate::names;
use crate::status::ApiError;

/// How one label requirement compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` or `key==value`.
    Equals,
    /// `key!=value`; also true when the label is absent.
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`; also true when the label is absent.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>3`: the label's value, as an integer, is greater.
    GreaterThan,
    /// `key<3`.
    LessThan,
}

/// One `key op values` term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and without duplicates; empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

impl Requirement {
    /// Checks the key and values the way `labels.NewRequirement` does.
    fn new(key: &str, operator: Operator, mut values: Vec<String>) -> Result<Self, String> {
        let mut errs = Vec::new();
        let key_errs = names::qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(format!(
                "invalid label key \"{key}\": {}",
                key_errs.join("; ")
            ));
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                errs.push("for 'in', 'notin' operators, values set can't be empty".to_string());
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                errs.push("exact-match compatibility requires one single value".to_string());
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push("values set must be empty for exists and does not exist".to_string());
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(
                        "for 'Gt', 'Lt' operators, exactly one value is required".to_string(),
                    );
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    errs.push("for 'Gt', 'Lt' operators, the value must be an integer".to_string());
                }
            }
            _ => {}
        }
        for value in &values {
            let value_errs = names::label_value(value);
            if !value_errs.is_empty() {
                errs.push(format!(
                    "invalid label value \"{value}\": {}",
                    value_errs.join("; ")
                ));
            }
        }
        if !errs.is_empty() {
            return Err(errs.join(", "));
        }
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    /// Whether a set of labels satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let listed = |v: &String| self.values.contains(v);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(listed),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(listed),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let have = value.and_then(|v| v.parse::<i64>().ok());
                let want = self.values.first().and_then(|v| v.parse::<i64>().ok());
                match (have, want) {
                    (Some(have), Some(want)) if self.operator == Operator::GreaterThan => {
                        have > want
                    }
                    (Some(have), Some(want)) => have < want,
                    _ => false,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, first),
            Operator::NotEquals => write!(f, "{}!={}", self.key, first),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{}", self.key, first),
            Operator::LessThan => write!(f, "{}<{}", self.key, first),
        }
    }
}

/// A label selector: every requirement must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key, as Kubernetes sorts them, so equal selectors print equally.
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the string form (`app=web,tier in (a,b),!canary`).
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut parser = Parser {
            tokens: lex(selector),
            pos: 0,
        };
        let mut requirements = parser.parse().map_err(ApiError::BadRequest)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Converts a `metav1.LabelSelector` (`matchLabels` and `matchExpressions`).
    pub fn from_k8s(selector: &meta::LabelSelector) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            let r = Requirement::new(key, Operator::Equals, vec![value.clone()])
                .map_err(ApiError::BadRequest)?;
            requirements.push(r);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "\"{other}\" is not a valid label selector operator"
                    )))
                }
            };
            let values = expr.values.clone().unwrap_or_default();
            let r = Requirement::new(&expr.key, operator, values).map_err(ApiError::BadRequest)?;
            requirements.push(r);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether the selector has no requirements (and so matches every object).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Tokens of the label selector grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    GreaterThan,
    LessThan,
    OpenParen,
    CloseParen,
    Comma,
    End,
}

impl Token {
    /// The text the token came from, for error messages.
    fn literal(&self) -> &str {
        match self {
            Token::Identifier(s) => s,
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Bang => "!",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::OpenParen => "(",
            Token::CloseParen => ")",
            Token::Comma => ",",
            Token::End => "",
        }
    }

    /// Inside a value position `in` and `notin` are ordinary words (`a in (in,notin)`).
    fn as_value(&self) -> Option<String> {
        match self {
            Token::Identifier(s) => Some(s.clone()),
            Token::In | Token::NotIn => Some(self.literal().to_string()),
            _ => None,
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Splits a selector into tokens. Operators are read greedily (`!=` before `!`), words run to
/// the next special character or whitespace.
fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if is_special(c) {
            chars.next();
            let next = chars.peek().copied();
            let token = match (c, next) {
                ('=', Some('=')) => Token::DoubleEquals,
                ('!', Some('=')) => Token::NotEquals,
                ('=', _) => Token::Equals,
                ('!', _) => Token::Bang,
                ('>', _) => Token::GreaterThan,
                ('<', _) => Token::LessThan,
                ('(', _) => Token::OpenParen,
                (')', _) => Token::CloseParen,
                _ => Token::Comma,
            };
            if matches!(token, Token::DoubleEquals | Token::NotEquals) {
                chars.next();
            }
            tokens.push(token);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || is_special(c) {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(match word.as_str() {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier(word),
            });
        }
    }
    tokens.push(Token::End);
    tokens
}

/// A recursive-descent parser over the tokens, one requirement at a time.
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        self.pos += 1;
        token
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            match self.peek() {
                Token::End => return Ok(requirements),
                t if t.as_value().is_some() || *t == Token::Bang => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    match self.next() {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let t = self.peek();
                            if t.as_value().is_none() && *t != Token::Bang {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                ));
                            }
                        }
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            ))
                        }
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let negated = *self.peek() == Token::Bang;
        if negated {
            self.next();
        }
        let token = self.next();
        let key = token
            .as_value()
            .ok_or_else(|| format!("found '{}', expected: identifier", token.literal()))?;
        // `!key` takes no operator: whatever follows it is the caller's to reject.
        if negated {
            return Requirement::new(&key, Operator::DoesNotExist, Vec::new());
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Requirement::new(&key, Operator::Exists, Vec::new());
        }
        let operator = match self.next() {
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            t => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.literal()
                ))
            }
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_list()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(&key, operator, values)
    }

    /// `(a, b, c)`; empty items are empty strings, as in Kubernetes (`(a,)` holds `""`).
    fn value_list(&mut self) -> Result<Vec<String>, String> {
        let open = self.next();
        if open != Token::OpenParen {
            return Err(format!("found '{}' expected: '('", open.literal()));
        }
        let mut values = Vec::new();
        let mut expect_value = true;
        loop {
            let token = self.next();
            match (token.as_value(), &token) {
                (Some(value), _) if expect_value => {
                    values.push(value);
                    expect_value = false;
                }
                (None, Token::Comma) => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                (None, Token::CloseParen) => {
                    if expect_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                _ if !expect_value => {
                    return Err(format!("found '{}', expected: ',' or ')'", token.literal()));
                }
                _ => {
                    return Err(format!(
                        "found '{}', expected: ',', ')' or identifier",
                        token.literal()
                    ))
                }
            }
        }
    }

    /// The value after `=`, `!=`, `>` or `<`; nothing before `,` or the end means `""`.
    fn exact_value(&mut self) -> Result<String, String> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(String::new());
        }
        let token = self.next();
        token
            .as_value()
            .ok_or_else(|| format!("found '{}', expected: identifier", token.literal()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_strings_match_like_kubernetes() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("version", "3")]);
        let db = labels(&[("app", "db")]);
        // (selector, matches web, matches db)
        let cases = [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web,db)", true, true),
            ("app notin (web)", false, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app=web,tier=front", true, false),
            ("  app = web ,  tier in ( front , back ) ", true, false),
            ("tier notin (back)", true, true),
            ("tier!=back", true, true),
            ("version>2", true, false),
            ("version<2", false, false),
            ("app in (in,notin)", false, false),
            ("app=", false, false),
        ];
        for (selector, want_web, want_db) in cases {
            let parsed =
                LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
            assert_eq!(parsed.matches(&web), want_web, "{selector:?} on web");
            assert_eq!(parsed.matches(&db), want_db, "{selector:?} on db");
        }
    }

    #[test]
    fn bad_label_selectors_are_bad_requests() {
        let cases = [
            ("app=web=x", "found '=', expected: ',' or 'end of string'"),
            (
                "app in web",
                "unable to parse requirement: found 'web' expected: '('",
            ),
            (
                "app in (web",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "app in (=)",
                "unable to parse requirement: found '=', expected: ',', ')' or identifier",
            ),
            (
                "=web",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            ("app,", "found '', expected: identifier after ','"),
            (
                "Bad Key=x",
                "unable to parse requirement: found 'Key', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("-app=x", "invalid label key \"-app\""),
            ("app=-x-", "invalid label value \"-x-\""),
            ("app>x", "the value must be an integer"),
            ("!app=x", "found '=', expected: ',' or 'end of string'"),
        ];
        for (selector, want) in cases {
            match LabelSelector::parse(selector) {
                Err(ApiError::BadRequest(message)) => {
                    assert!(message.contains(want), "{selector:?}: {message}")
                }
                other => panic!("{selector:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn label_selectors_print_canonically() {
        let parsed = LabelSelector::parse("tier in (b, a),app=web,!canary").expect("valid");
        assert_eq!(parsed.to_string(), "app=web,!canary,tier in (a,b)");
        assert_eq!(LabelSelector::parse(&parsed.to_string()), Ok(parsed));
    }

    #[test]
    fn k8s_selectors_convert() {
        let selector: meta::LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .expect("selector");
        let parsed = LabelSelector::from_k8s(&selector).expect("valid");
        assert!(parsed.matches(&labels(&[("app", "web"), ("tier", "edge")])));
        assert!(!parsed.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("canary", "1")
        ])));
        assert!(!parsed.matches(&labels(&[("app", "web")])));
        assert!(LabelSelector::from_k8s(&meta::LabelSelector::default())
            .expect("empty")
            .is_empty());

        let bad: meta::LabelSelector = serde_json::from_value(json!({
            "matchExpressions": [{"key": "tier", "operator": "Near"}]
        }))
        .expect("selector");
        assert_eq!(
            LabelSelector::from_k8s(&bad),
            Err(ApiError::BadRequest(
                "\"Near\" is not a valid label selector operator".into()
            ))
        );
        let empty_in: meta::LabelSelector = serde_json::from_value(json!({
            "matchExpressions": [{"key": "tier", "operator": "In", "values": []}]
        }))
        .expect("selector");
        assert!(LabelSelector::from_k8s(&empty_in).is_err());
    }
}
