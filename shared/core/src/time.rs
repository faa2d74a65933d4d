//! A point in time as the registry's records write it: RFC 3339 in UTC with milliseconds
//! (`2026-12-04T12:00:00.000Z`), read back as a time, never re-parsed from text by its users.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// How long ago this was, on this machine's clock (zero if it is in the future).
    pub fn elapsed(self) -> Duration {
        SystemTime::now()
            .duration_since(self.0)
            .unwrap_or(Duration::ZERO)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(at: SystemTime) -> Self {
        Self(at)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_millis(self.0).fmt(f)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = humantime::TimestampError;

    /// RFC 3339 at any precision, `Z` or no zone (UTC).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_rfc3339_weak(text).map(Self)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("time {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_reads_back_as_the_records_write_it() {
        let text = "2026-12-04T12:00:00.123Z";
        let at: Timestamp = serde_json::from_value(serde_json::json!(text)).unwrap();
        assert_eq!(serde_json::to_value(at).unwrap(), text);
        assert_eq!(at.to_string(), text);
        let later: Timestamp = "2026-12-04T12:00:01Z".parse().unwrap();
        assert_eq!(
            later
                .system_time()
                .duration_since(at.system_time())
                .unwrap(),
            Duration::from_millis(877)
        );
        assert!(serde_json::from_value::<Timestamp>(serde_json::json!("yesterday")).is_err());
    }
}
