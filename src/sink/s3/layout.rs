//! Object keys: where each batch is written.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::encode::object::ObjectFormat;

/// Where and how batches are written.
#[derive(Debug, Clone)]
pub struct ObjectLayout {
    pub prefix: Option<String>,
    pub uid: String,
    pub run: u64,
    pub format: ObjectFormat,
}

impl ObjectLayout {
    /// The batch's key; see the module doc for the scheme.
    pub fn key(&self, seq: u64, opened_at: SystemTime, format: ObjectFormat) -> String {
        let since = opened_at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let day_secs = secs % 86_400;
        let (hh, mm, ss) = (day_secs / 3600, day_secs % 3600 / 60, day_secs % 60);
        let ms = since.subsec_millis();
        let prefix = self
            .prefix
            .as_deref()
            .map(|p| format!("{p}/"))
            .unwrap_or_default();
        format!(
            "{prefix}{uid}/{y:04}/{m:02}/{d:02}/{hh:02}/{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}.{ms:03}Z-{run:06}-{seq:09}.{ext}.gz",
            uid = self.uid,
            run = self.run,
            ext = format.extension(),
        )
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm),
/// so keys need no date library.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_follow_the_layout_and_differ_between_runs() {
        let mut layout = ObjectLayout {
            prefix: Some("events".into()),
            uid: "c1".into(),
            run: 7,
            format: ObjectFormat::Jsonl,
        };
        // 2024-02-29T23:59:58.250Z
        let at = UNIX_EPOCH + Duration::from_millis(1_709_251_198_250);
        let key = layout.key(42, at, ObjectFormat::Jsonl);
        assert_eq!(
            key,
            "events/c1/2024/02/29/23/20240229T235958.250Z-000007-000000042.jsonl.gz"
        );
        assert_eq!(
            layout.key(42, at, ObjectFormat::Jsonl),
            key,
            "a retry reuses the key"
        );
        layout.run = 8;
        layout.prefix = None;
        assert_eq!(
            layout.key(42, at, ObjectFormat::Protobuf),
            "c1/2024/02/29/23/20240229T235958.250Z-000008-000000042.pb.gz"
        );
    }

    #[test]
    fn dates_are_right_across_leap_years_and_epochs() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
