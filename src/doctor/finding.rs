//! A check's verdict, and the exit status a set of verdicts gives.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// The check's name (a sysctl's own name where it is one).
    pub check: &'static str,
    pub status: Status,
    /// What was read, in words, with the numbers.
    pub reading: String,
    /// What `tuning/README.md` recommends (quoted from it), and where it says why.
    pub recommendation: String,
    /// The exact command(s) that change it.
    pub fix: String,
    /// The numbers behind the reading, for `--json`.
    pub values: Vec<(&'static str, f64)>,
}

/// Exit status for a set of findings: 1 when any is FAIL.
pub fn exit_code(findings: &[Finding]) -> u8 {
    u8::from(findings.iter().any(|f| f.status == Status::Fail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(status: Status) -> Finding {
        Finding {
            check: "x",
            status,
            reading: String::new(),
            recommendation: String::new(),
            fix: String::new(),
            values: vec![],
        }
    }

    #[test]
    fn doctor_exit_code_is_one_only_with_a_fail() {
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(exit_code(&[finding(Status::Ok), finding(Status::Warn)]), 0);
        assert_eq!(exit_code(&[finding(Status::Ok), finding(Status::Fail)]), 1);
    }
}
