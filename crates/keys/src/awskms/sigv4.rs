//! AWS Signature Version 4 for the one request shape KMS needs: `POST /` with a JSON body and a
//! handful of headers, no query string. Written here (≈80 lines over aws-lc-rs HMAC/SHA-256)
//! rather than pulling `aws-sigv4` and the smithy runtime types it depends on; checked against
//! AWS's published test-suite vector and, in the KMS tests, against botocore's signer.

use aws_lc_rs::{digest, hmac};

/// Credentials that sign requests. `Debug` never prints the secret.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: zeroize::Zeroizing<String>,
    pub session_token: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

fn hex_sha256(data: &[u8]) -> String {
    crate::hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// The request to sign: method, path, query (already canonical) and headers (name, value).
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The `Authorization` header value for `req`, signed for `region`/`service` at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`; the request must carry the same value in `x-amz-date`).
pub fn authorization(
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    req: &Request<'_>,
) -> String {
    let date = &amz_date[..8.min(amz_date.len())];
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| {
            let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (n.to_ascii_lowercase(), value)
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        req.query,
        canonical_headers,
        signed_headers,
        hex_sha256(req.body)
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical.as_bytes())
    );
    let k_secret = zeroize::Zeroizing::new(format!("AWS4{}", creds.secret_access_key.as_str()));
    let k_date = zeroize::Zeroizing::new(hmac_sha256(k_secret.as_bytes(), date.as_bytes()));
    let k_region = zeroize::Zeroizing::new(hmac_sha256(&k_date, region.as_bytes()));
    let k_service = zeroize::Zeroizing::new(hmac_sha256(&k_region, service.as_bytes()));
    let k_signing = zeroize::Zeroizing::new(hmac_sha256(&k_service, b"aws4_request"));
    let signature = crate::hex(&hmac_sha256(&k_signing, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: zeroize::Zeroizing::new(
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            ),
            session_token: None,
        }
    }

    /// AWS SigV4 test suite, `get-vanilla`.
    #[test]
    fn aws_test_suite_get_vanilla() {
        let auth = authorization(
            &example(),
            "us-east-1",
            "service",
            "20150830T123600Z",
            &Request {
                method: "GET",
                path: "/",
                query: "",
                headers: &[
                    ("Host", "example.amazonaws.com"),
                    ("X-Amz-Date", "20150830T123600Z"),
                ],
                body: b"",
            },
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn every_input_changes_the_signature() {
        let base = || Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &[("host", "h"), ("x-amz-date", "20240101T000000Z")],
            body: b"{}",
        };
        let sig = |r: &Request<'_>, region: &str| {
            authorization(&example(), region, "kms", "20240101T000000Z", r)
        };
        let a = sig(&base(), "us-east-1");
        assert_ne!(a, sig(&base(), "eu-west-1"));
        assert_ne!(
            a,
            sig(
                &Request {
                    body: b"{ }",
                    ..base()
                },
                "us-east-1"
            )
        );
        assert_ne!(
            a,
            sig(
                &Request {
                    headers: &[("host", "h2"), ("x-amz-date", "20240101T000000Z")],
                    ..base()
                },
                "us-east-1"
            )
        );
        assert!(!format!("{:?}", example()).contains("EXAMPLEKEY"));
    }
}
