//! The arithmetic of the index's catalog records: what one instance adds to (or takes
//! from) the record of its series, its study and its patient.
//!
//! storage.catalog (Python) keeps the records in LMDB and reads them for queries; this
//! module is what runs for every stored object, so its per-object work is not
//! interpreter time (issue 18). A record is a JSON object:
//!
//! - series: `instances`, `bytes`, `series` (always 0), `tiers` {tier: instances}, and
//!   the series fields of its newest instance that had them;
//! - study: the same counts, `series` (how many series), `modalities` {modality:
//!   instances, only those above 0}, and the study fields;
//! - patient: `studies`, `instances` and the patient fields.
//!
//! A record whose `instances` falls to 0 is gone (`None`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// The fields a series record takes from its newest instance (the latest wins).
pub const SERIES_FIELDS: &[&str] = &[
    "study_instance_uid",
    "modality",
    "series_number",
    "series_description",
    "series_date",
    "body_part_examined",
];
/// The fields a study record takes from its newest instance.
pub const STUDY_FIELDS: &[&str] = &[
    "patient_id",
    "issuer_of_patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "study_date",
    "study_time",
    "study_id",
    "accession_number",
    "study_description",
    "referring_physician_name",
];
/// The fields a patient record takes from its newest instance.
pub const PATIENT_FIELDS: &[&str] = &[
    "patient_name",
    "issuer_of_patient_id",
    "patient_birth_date",
    "patient_sex",
];
/// Every field of an instance the records take: the series' and the study's (the
/// patient's are among the study's).
pub fn fields() -> impl Iterator<Item = &'static str> {
    SERIES_FIELDS.iter().chain(STUDY_FIELDS).copied()
}
/// What the records need of one instance.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// Field name -> value, for the fields of `SERIES_FIELDS`, `STUDY_FIELDS` and
    /// `PATIENT_FIELDS` (a missing one counts as empty).
    pub fields: Vec<(&'static str, &'a str)>,
    pub tier: &'a str,
    pub dataset_length: i64,
}

impl Facts<'_> {
    fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v)
    }
}

/// The three records after one instance was counted in (+1) or out (-1).
#[derive(Debug, PartialEq)]
pub struct Counted {
    pub series: Option<Vec<u8>>,
    pub study: Option<Vec<u8>>,
    /// None also when the instance names no patient (nothing to write then).
    pub patient: Option<Vec<u8>>,
    /// +1: the series record is new (link it to its study); -1: it is gone; 0.
    pub series_link: i8,
    /// The study's search keys may differ from before (a field they are made of, or
    /// its set of modalities, changed; or the record came or went).
    pub rekey: bool,
}

/// A series, study or patient record, as the index keeps it (JSON). One shape for
/// the three: a member a kind does not have stays `None` and is not written. Every
/// record is written by this module (and was by storage.catalog before it), so no
/// member outside these is expected; one would not survive the next update.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Record {
    #[serde(skip_serializing_if = "Option::is_none")]
    studies: Option<i64>,
    instances: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tiers: Option<BTreeMap<String, i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modalities: Option<BTreeMap<String, i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    study_instance_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modality: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    series_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_part_examined: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer_of_patient_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient_birth_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient_sex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    study_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    study_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    study_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accession_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    study_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referring_physician_name: Option<String>,
}

impl Record {
    fn field(&mut self, name: &str) -> &mut Option<String> {
        match name {
            "study_instance_uid" => &mut self.study_instance_uid,
            "modality" => &mut self.modality,
            "series_number" => &mut self.series_number,
            "series_description" => &mut self.series_description,
            "series_date" => &mut self.series_date,
            "body_part_examined" => &mut self.body_part_examined,
            "patient_id" => &mut self.patient_id,
            "issuer_of_patient_id" => &mut self.issuer_of_patient_id,
            "patient_name" => &mut self.patient_name,
            "patient_birth_date" => &mut self.patient_birth_date,
            "patient_sex" => &mut self.patient_sex,
            "study_date" => &mut self.study_date,
            "study_time" => &mut self.study_time,
            "study_id" => &mut self.study_id,
            "accession_number" => &mut self.accession_number,
            "study_description" => &mut self.study_description,
            "referring_physician_name" => &mut self.referring_physician_name,
            _ => unreachable!("{name} is not among catalog::fields()"),
        }
    }

    /// What is left once the counts moved by `sign`: nothing when its last instance
    /// went, else the record, taking the newest instance's `names` when it came in.
    fn settled(mut self, facts: &Facts, sign: i64, names: &[&str]) -> Option<Self> {
        if self.instances <= 0 {
            return None;
        }
        if sign > 0 {
            self.take_fields(facts, names);
        }
        Some(self)
    }

    /// The record's values of the fields in `names` become the instance's, where
    /// it has one (the latest instance wins; an empty value says nothing).
    fn take_fields(&mut self, facts: &Facts, names: &[&str]) {
        for name in names {
            let value = facts.get(name);
            if value.is_empty() {
                continue;
            }
            match self.field(name) {
                Some(old) if old == value => {}
                slot => *slot = Some(value.to_owned()),
            }
        }
    }
}

fn parse(raw: Option<&[u8]>, what: &str) -> Result<Option<Record>> {
    let Some(raw) = raw else { return Ok(None) };
    // serde would also read a struct from a JSON array; a record never is one.
    if raw.trim_ascii_start().first() != Some(&b'{') {
        return Err(CoreError::Record(format!(
            "{what} record is not a JSON object"
        )));
    }
    serde_json::from_slice(raw)
        .map(Some)
        .map_err(|e| CoreError::Record(format!("{what} record: {e}")))
}

fn bump(counter: &mut Option<i64>, delta: i64) {
    *counter = Some(counter.unwrap_or(0) + delta);
}

/// `counts[key] += delta` (the map made if missing); an entry that reaches 0 stays
/// unless `drop_empty`.
fn bump_in(counts: &mut Option<BTreeMap<String, i64>>, key: &str, delta: i64, drop_empty: bool) {
    let counts = counts.get_or_insert_with(BTreeMap::new);
    let value = counts.get(key).copied().unwrap_or(0) + delta;
    if drop_empty && value <= 0 {
        counts.remove(key);
    } else if let Some(slot) = counts.get_mut(key) {
        *slot = value;
    } else {
        counts.insert(key.to_owned(), value);
    }
}

fn dump(record: Option<Record>) -> Option<Vec<u8>> {
    // Integers, strings and maps of them always serialize.
    record.map(|r| serde_json::to_vec(&r).expect("a catalog record serializes"))
}

/// Counts the instance in (`sign` +1) or out (-1) of a series or study record.
fn count_in(
    record: Option<Record>,
    facts: &Facts,
    sign: i64,
    fields: &[&str],
    series_change: i64,
    modality: Option<&str>,
) -> Option<Record> {
    let mut record = record.unwrap_or_default();
    record.instances += sign;
    bump(&mut record.bytes, sign * facts.dataset_length);
    bump(&mut record.series, series_change);
    bump_in(&mut record.tiers, facts.tier, sign, false);
    if let Some(modality) = modality.filter(|m| !m.is_empty()) {
        bump_in(&mut record.modalities, modality, sign, true);
    }
    record.settled(facts, sign, fields)
}

fn count_patient(record: Option<Record>, facts: &Facts, sign: i64, studies: i64) -> Option<Record> {
    let mut record = record.unwrap_or_default();
    bump(&mut record.studies, studies);
    record.instances += sign;
    record.settled(facts, sign, PATIENT_FIELDS)
}

/// What a study's search keys are made of (storage.catalog's `_study_keys`): its
/// patient ID, accession number, study date, patient name and set of modalities.
#[derive(PartialEq)]
struct KeySource([Option<String>; 4], Vec<String>);

impl KeySource {
    fn of(record: Option<&Record>) -> Option<Self> {
        let r = record?;
        let modalities = r
            .modalities
            .as_ref()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let keyed = [
            r.patient_id.clone(),
            r.accession_number.clone(),
            r.study_date.clone(),
            r.patient_name.clone(),
        ];
        Some(Self(keyed, modalities))
    }
}

/// One instance counted in (`sign` +1) or out (-1) of its series, study and patient
/// records, each given as stored (None: no record yet). `patient` is only read when
/// the instance names a patient.
pub fn count(
    series: Option<&[u8]>,
    study: Option<&[u8]>,
    patient: Option<&[u8]>,
    facts: &Facts,
    sign: i64,
) -> Result<Counted> {
    let series_before = parse(series, "series")?;
    let study_before = parse(study, "study")?;
    let had_series = series_before.is_some();
    let had_study = study_before.is_some();
    let keys_before = KeySource::of(study_before.as_ref());
    let series_after = count_in(series_before, facts, sign, SERIES_FIELDS, 0, None);
    let series_link = i8::from(series_after.is_some()) - i8::from(had_series);
    let study_after = count_in(
        study_before,
        facts,
        sign,
        STUDY_FIELDS,
        i64::from(series_link),
        Some(facts.get("modality")),
    );
    let studies = i64::from(study_after.is_some()) - i64::from(had_study);
    let rekey = keys_before != KeySource::of(study_after.as_ref());
    let patient = if facts.get("patient_id").is_empty() {
        None
    } else {
        let before = parse(patient, "patient")?;
        dump(count_patient(before, facts, sign, studies))
    };
    Ok(Counted {
        series: dump(series_after),
        study: dump(study_after),
        patient,
        series_link,
        rekey,
    })
}

/// A series or study record with one instance moved from `from` to `to` tier.
pub fn retier(record: &[u8], from: &str, to: &str) -> Result<Vec<u8>> {
    let mut record = parse(Some(record), "catalog")?.unwrap_or_default();
    bump_in(&mut record.tiers, from, -1, false);
    bump_in(&mut record.tiers, to, 1, false);
    Ok(dump(Some(record)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn facts<'a>(pairs: &[(&'static str, &'a str)]) -> Facts<'a> {
        Facts {
            fields: pairs.to_vec(),
            tier: "hot",
            dataset_length: 100,
        }
    }

    fn json(raw: Option<&Vec<u8>>) -> Value {
        serde_json::from_slice(raw.unwrap()).unwrap()
    }

    /// `facts` counted into (or out of) the records `before` left.
    fn again(before: &Counted, facts: &Facts, sign: i64) -> Counted {
        let records = [&before.series, &before.study, &before.patient];
        let [series, study, patient] = records.map(|r| r.as_deref());
        count(series, study, patient, facts, sign).unwrap()
    }

    fn ct(patient: &str) -> Facts<'_> {
        facts(&[
            ("patient_id", patient),
            ("patient_name", "DOE^JANE"),
            ("modality", "CT"),
            ("study_date", "20260101"),
            ("series_number", "3"),
        ])
    }

    #[test]
    fn the_first_instance_makes_all_three_records() {
        let counted = count(None, None, None, &ct("P1"), 1).unwrap();
        assert_eq!(counted.series_link, 1);
        assert!(counted.rekey);
        assert_eq!(
            json(counted.series.as_ref()),
            serde_json::json!({"instances": 1, "bytes": 100, "series": 0,
                "tiers": {"hot": 1}, "modality": "CT", "series_number": "3"})
        );
        assert_eq!(
            json(counted.study.as_ref()),
            serde_json::json!({"instances": 1, "bytes": 100, "series": 1,
                "tiers": {"hot": 1}, "modalities": {"CT": 1}, "patient_id": "P1",
                "patient_name": "DOE^JANE", "study_date": "20260101"})
        );
        assert_eq!(
            json(counted.patient.as_ref()),
            serde_json::json!({"studies": 1, "instances": 1, "patient_name": "DOE^JANE"})
        );
    }

    #[test]
    fn a_second_instance_counts_without_new_links_or_keys() {
        let first = count(None, None, None, &ct("P1"), 1).unwrap();
        let counted = again(&first, &ct("P1"), 1);
        assert_eq!(counted.series_link, 0);
        assert!(!counted.rekey);
        assert_eq!(json(counted.study.as_ref())["instances"], 2);
        assert_eq!(json(counted.study.as_ref())["series"], 1);
        assert_eq!(json(counted.patient.as_ref())["studies"], 1);
        assert_eq!(json(counted.patient.as_ref())["instances"], 2);
    }

    #[test]
    fn empty_fields_do_not_overwrite_and_a_new_modality_rekeys() {
        let first = count(None, None, None, &ct("P1"), 1).unwrap();
        let mr = facts(&[("patient_id", "P1"), ("modality", "MR")]);
        let counted = again(&first, &mr, 1);
        let study = json(counted.study.as_ref());
        assert_eq!(study["patient_name"], "DOE^JANE");
        assert_eq!(study["modalities"], serde_json::json!({"CT": 1, "MR": 1}));
        assert!(counted.rekey);
    }

    #[test]
    fn the_last_instance_out_removes_the_records() {
        let first = count(None, None, None, &ct("P1"), 1).unwrap();
        let counted = again(&first, &ct("P1"), -1);
        assert_eq!(
            counted,
            Counted {
                series: None,
                study: None,
                patient: None,
                series_link: -1,
                rekey: true,
            }
        );
    }

    #[test]
    fn no_patient_id_no_patient_record() {
        let counted = count(None, None, Some(b"not json"), &ct(""), 1).unwrap();
        assert_eq!(counted.patient, None);
    }

    #[test]
    fn a_record_that_is_not_a_json_object_is_an_error() {
        for raw in [&b"[1]"[..], b"{", b""] {
            assert!(matches!(
                count(Some(raw), None, None, &ct("P1"), 1),
                Err(CoreError::Record(_))
            ));
        }
    }

    #[test]
    fn fields_name_every_field_of_each_record_once() {
        let all: Vec<&str> = fields().collect();
        let mut once = all.clone();
        once.sort_unstable();
        once.dedup();
        assert_eq!(once.len(), all.len(), "a field of both series and study");
        assert!(PATIENT_FIELDS.iter().all(|f| STUDY_FIELDS.contains(f)));
        let mut record = Record::default();
        for name in all {
            record.field(name); // every one has its member
        }
    }

    #[test]
    fn retier_moves_one_instance_between_tiers() {
        let record = br#"{"instances": 2, "tiers": {"hot": 2}}"#;
        let moved: Value = serde_json::from_slice(&retier(record, "hot", "warm").unwrap()).unwrap();
        assert_eq!(moved["tiers"], serde_json::json!({"hot": 1, "warm": 1}));
        assert_eq!(moved["instances"], 2);
    }
}
