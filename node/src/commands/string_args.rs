//! The options SET and GETEX share, parsed as Redis's
//! `parseExtendedStringArgumentsOrReply` parses them for both commands.
//!
//! Parsing and checking the expire time are two steps, as in Redis: every
//! option is read first (so `SET k v EX abc FOO` is a syntax error, not a
//! bad integer), and the time is checked only when it is used (GETEX on a
//! missing key answers nil whatever the time says). SETEX and PSETEX use the
//! second step alone.

use bytes::Bytes;

use super::util::ArgError;
use crate::resp::string_to_i64;

/// Which command the options belong to: each accepts its own subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringCommand {
    /// SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT time|KEEPTTL]
    Set,
    /// GETEX key [EX|PX|EXAT|PXAT time|PERSIST]
    GetEx,
}

impl StringCommand {
    fn name(self) -> &'static str {
        match self {
            StringCommand::Set => "set",
            StringCommand::GetEx => "getex",
        }
    }
}

/// NX / XX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    Always,
    /// NX: only if the key does not exist.
    IfAbsent,
    /// XX: only if the key exists.
    IfPresent,
}

/// What to do with the key's time to live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TtlOption {
    /// No option: SET clears the TTL, GETEX leaves it alone.
    #[default]
    Default,
    /// SET ... KEEPTTL.
    Keep,
    /// GETEX ... PERSIST.
    Persist,
    /// EX / PX / EXAT / PXAT, not yet checked.
    Expire(ExpireArg),
}

/// The parsed options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StringOptions {
    pub condition: Condition,
    /// SET ... GET: reply with the old value.
    pub get: bool,
    pub ttl: TtlOption,
}

/// How an expire time is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireUnit {
    /// EX / SETEX: seconds from now.
    Seconds,
    /// PX / PSETEX: milliseconds from now.
    Millis,
    /// EXAT: unix time in seconds.
    UnixSeconds,
    /// PXAT: unix time in milliseconds.
    UnixMillis,
}

/// An expire time as given, checked by [`ExpireArg::deadline_ms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpireArg {
    pub unit: ExpireUnit,
    pub value: Bytes,
}

impl ExpireArg {
    /// The absolute deadline in unix milliseconds, with Redis's checks
    /// (`getExpireMillisecondsOrReply`): an integer, above 0, and no
    /// overflow once converted and added to `now_ms`. `command` names the
    /// command in the error, as Redis does.
    pub fn deadline_ms(&self, command: &'static str, now_ms: u64) -> Result<u64, ArgError> {
        let n = string_to_i64(&self.value).ok_or(ArgError::NotInteger)?;
        let invalid = ArgError::InvalidExpireTime(command);
        if n <= 0 {
            return Err(invalid);
        }
        let ms = match self.unit {
            ExpireUnit::Seconds | ExpireUnit::UnixSeconds => n.checked_mul(1000),
            ExpireUnit::Millis | ExpireUnit::UnixMillis => Some(n),
        }
        .ok_or_else(|| invalid.clone())?;
        let at = match self.unit {
            ExpireUnit::Seconds | ExpireUnit::Millis => i64::try_from(now_ms)
                .ok()
                .and_then(|now| ms.checked_add(now)),
            ExpireUnit::UnixSeconds | ExpireUnit::UnixMillis => Some(ms),
        };
        match at {
            Some(at) if at > 0 => Ok(at as u64),
            _ => Err(invalid),
        }
    }
}

/// Parse the options after the key (GETEX) or the value (SET). Options may
/// repeat (`NX NX`, `EX 1 EX 2`: the last time wins) but not conflict
/// (`NX XX`, `EX 1 PX 2`, `EX 1 KEEPTTL`): a conflict, an option the command
/// does not take, or a time option without its value is a syntax error.
pub fn parse_string_options(
    options: &[Bytes],
    command: StringCommand,
) -> Result<StringOptions, ArgError> {
    let set = command == StringCommand::Set;
    let mut parsed = StringOptions::default();
    let mut i = 0;
    while i < options.len() {
        let opt: &[u8] = &options[i];
        let next = options.get(i + 1);
        let is = |name: &str| opt.eq_ignore_ascii_case(name.as_bytes());
        let expire_unit = if is("ex") {
            Some(ExpireUnit::Seconds)
        } else if is("px") {
            Some(ExpireUnit::Millis)
        } else if is("exat") {
            Some(ExpireUnit::UnixSeconds)
        } else if is("pxat") {
            Some(ExpireUnit::UnixMillis)
        } else {
            None
        };
        match (expire_unit, next) {
            (Some(unit), Some(value)) if ttl_allows_expire(&parsed.ttl, unit) => {
                parsed.ttl = TtlOption::Expire(ExpireArg {
                    unit,
                    value: value.clone(),
                });
                i += 1;
            }
            (Some(_), _) => return Err(ArgError::Syntax),
            (None, _) if set && is("nx") && parsed.condition != Condition::IfPresent => {
                parsed.condition = Condition::IfAbsent;
            }
            (None, _) if set && is("xx") && parsed.condition != Condition::IfAbsent => {
                parsed.condition = Condition::IfPresent;
            }
            (None, _) if set && is("get") => parsed.get = true,
            (None, _)
                if set
                    && is("keepttl")
                    && matches!(parsed.ttl, TtlOption::Default | TtlOption::Keep) =>
            {
                parsed.ttl = TtlOption::Keep;
            }
            (None, _)
                if !set
                    && is("persist")
                    && matches!(parsed.ttl, TtlOption::Default | TtlOption::Persist) =>
            {
                parsed.ttl = TtlOption::Persist;
            }
            (None, _) => return Err(ArgError::Syntax),
        }
        i += 1;
    }
    Ok(parsed)
}

/// An expire option may follow no TTL option or the same expire option.
fn ttl_allows_expire(ttl: &TtlOption, unit: ExpireUnit) -> bool {
    match ttl {
        TtlOption::Default => true,
        TtlOption::Expire(e) => e.unit == unit,
        TtlOption::Keep | TtlOption::Persist => false,
    }
}

impl StringOptions {
    /// The deadline an expire option asks for, checked as `command`'s.
    pub fn deadline_ms(
        &self,
        command: StringCommand,
        now_ms: u64,
    ) -> Result<Option<u64>, ArgError> {
        match &self.ttl {
            TtlOption::Expire(e) => e.deadline_ms(command.name(), now_ms).map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    fn parse(list: &[&str], command: StringCommand) -> Result<StringOptions, ArgError> {
        parse_string_options(&args(list), command)
    }

    fn expire(unit: ExpireUnit, value: &str) -> TtlOption {
        TtlOption::Expire(ExpireArg {
            unit,
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
    }

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn set_options_parse_into_typed_fields_in_any_case() {
        let o = parse(&["nx", "Get", "PX", "500"], StringCommand::Set).unwrap();
        assert_eq!(o.condition, Condition::IfAbsent);
        assert!(o.get);
        assert_eq!(o.ttl, expire(ExpireUnit::Millis, "500"));
        let o = parse(&["XX", "keepttl"], StringCommand::Set).unwrap();
        assert_eq!(o.condition, Condition::IfPresent);
        assert_eq!(o.ttl, TtlOption::Keep);
        assert_eq!(
            parse(&[], StringCommand::Set).unwrap(),
            StringOptions::default()
        );
    }

    #[test]
    fn repeated_options_are_accepted_like_redis_and_the_last_time_wins() {
        let o = parse(&["NX", "NX", "EX", "1", "EX", "2"], StringCommand::Set).unwrap();
        assert_eq!(o.condition, Condition::IfAbsent);
        assert_eq!(o.ttl, expire(ExpireUnit::Seconds, "2"));
        let o = parse(&["KEEPTTL", "KEEPTTL", "GET", "GET"], StringCommand::Set).unwrap();
        assert_eq!(o.ttl, TtlOption::Keep);
        let o = parse(&["PERSIST", "PERSIST"], StringCommand::GetEx).unwrap();
        assert_eq!(o.ttl, TtlOption::Persist);
    }

    #[test]
    fn conflicting_or_foreign_options_are_syntax_errors() {
        for bad in [
            &["NX", "XX"][..],
            &["XX", "NX"],
            &["EX", "10", "PX", "100"],
            &["EX", "10", "KEEPTTL"],
            &["KEEPTTL", "EXAT", "10"],
            &["EX"],
            &["PXAT"],
            &["FOO"],
            &["PERSIST"],
            // The value is never looked at before every option is read.
            &["EX", "abc", "FOO"],
        ] {
            assert_eq!(
                parse(bad, StringCommand::Set),
                Err(ArgError::Syntax),
                "{bad:?}"
            );
        }
        for bad in [
            &["EX", "10", "PX", "10"][..],
            &["PERSIST", "EX", "10"],
            &["EX"],
            &["NX"],
            &["GET"],
            &["KEEPTTL"],
        ] {
            assert_eq!(
                parse(bad, StringCommand::GetEx),
                Err(ArgError::Syntax),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn set_and_getex_share_expiry_parsing_errors() {
        for (list, set_error, getex_error) in [
            (
                &["EX", "0"][..],
                "ERR invalid expire time in 'set' command",
                "ERR invalid expire time in 'getex' command",
            ),
            (
                &["PXAT", "-5"],
                "ERR invalid expire time in 'set' command",
                "ERR invalid expire time in 'getex' command",
            ),
            (
                &["EX", "9223372036854775807"],
                "ERR invalid expire time in 'set' command",
                "ERR invalid expire time in 'getex' command",
            ),
            (
                &["PX", "9223372036854775807"],
                "ERR invalid expire time in 'set' command",
                "ERR invalid expire time in 'getex' command",
            ),
            (
                &["EX", "ten"],
                "ERR value is not an integer or out of range",
                "ERR value is not an integer or out of range",
            ),
            (
                &["EX", "010"],
                "ERR value is not an integer or out of range",
                "ERR value is not an integer or out of range",
            ),
        ] {
            for (command, want) in [
                (StringCommand::Set, set_error),
                (StringCommand::GetEx, getex_error),
            ] {
                let o = parse(list, command).unwrap();
                let err = o.deadline_ms(command, NOW).unwrap_err();
                assert_eq!(err.to_string(), want, "{command:?} {list:?}");
            }
        }
    }

    #[test]
    fn expire_times_become_unix_millisecond_deadlines() {
        let at = |unit, value: &str| {
            ExpireArg {
                unit,
                value: Bytes::copy_from_slice(value.as_bytes()),
            }
            .deadline_ms("set", NOW)
        };
        assert_eq!(at(ExpireUnit::Seconds, "10"), Ok(NOW + 10_000));
        assert_eq!(at(ExpireUnit::Millis, "10"), Ok(NOW + 10));
        assert_eq!(at(ExpireUnit::UnixSeconds, "10"), Ok(10_000));
        assert_eq!(at(ExpireUnit::UnixMillis, "10"), Ok(10));
        assert_eq!(
            at(ExpireUnit::Millis, &(i64::MAX - 5).to_string()),
            Err(ArgError::InvalidExpireTime("set"))
        );
        assert_eq!(
            at(ExpireUnit::UnixMillis, &i64::MAX.to_string()),
            Ok(i64::MAX as u64)
        );
    }
}
