//! Where the functions take their AWS credentials and region from: the environment when
//! it holds them (Lambda puts the role's there, session token included; `sam local` and
//! `cargo lambda watch` pass the shell's through), otherwise the SDK's default chains, so
//! that a profile or SSO user running locally is served as before.

use std::path::Path;

use aws_sdk_dynamodb::config::ProvideCredentials;

const VARS: [&str; 8] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
];

/// Region, access key id and session token the functions' SDK configuration ends up with.
async fn resolved() -> (String, String, Option<String>) {
    let sdk = shared::aws::config().await;
    let credentials = sdk
        .credentials_provider()
        .expect("a credentials provider")
        .provide_credentials()
        .await
        .expect("credentials");
    (
        sdk.region().map(ToString::to_string).unwrap_or_default(),
        credentials.access_key_id().to_owned(),
        credentials.session_token().map(str::to_owned),
    )
}

/// Replaces the AWS variables with `pairs`, the profile files being the ones in `dir`.
fn set_env(dir: &Path, pairs: &[(&str, &str)]) {
    for var in VARS {
        // SAFETY: this binary's only test, on a single-threaded runtime, is the only
        // code that reads or writes the environment.
        unsafe { std::env::remove_var(var) };
    }
    let files = [
        ("AWS_CONFIG_FILE", dir.join("config")),
        ("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials")),
    ];
    for (var, path) in files {
        unsafe { std::env::set_var(var, path) };
    }
    for (var, value) in pairs {
        unsafe { std::env::set_var(var, value) };
    }
}

/// The only test in this binary that touches the environment.
#[tokio::test(flavor = "current_thread")]
async fn credentials_and_region_come_from_the_environment_or_else_the_profile() {
    let dir = std::env::temp_dir().join(format!("aws-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config"), "[profile dev]\nregion = eu-west-3\n").unwrap();
    std::fs::write(
        dir.join("credentials"),
        "[dev]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = profile-secret\n",
    )
    .unwrap();

    // On Lambda: the role's temporary credentials and the region, all in the environment
    // (a profile named too, to show that the environment wins as in the default chain).
    set_env(
        &dir,
        &[
            ("AWS_ACCESS_KEY_ID", "ASIAROLE"),
            ("AWS_SECRET_ACCESS_KEY", "role-secret"),
            ("AWS_SESSION_TOKEN", "role-session"),
            ("AWS_REGION", "eu-central-1"),
            ("AWS_PROFILE", "dev"),
        ],
    );
    assert_eq!(
        resolved().await,
        (
            "eu-central-1".to_owned(),
            "ASIAROLE".to_owned(),
            Some("role-session".to_owned())
        )
    );

    // A developer with a profile and nothing in the environment.
    set_env(&dir, &[("AWS_PROFILE", "dev")]);
    assert_eq!(
        resolved().await,
        ("eu-west-3".to_owned(), "AKIAPROFILE".to_owned(), None)
    );

    // The region in the environment, the credentials in the profile; a key id without
    // its secret is not taken from the environment either (the default chain skips it).
    set_env(
        &dir,
        &[
            ("AWS_PROFILE", "dev"),
            ("AWS_DEFAULT_REGION", "ap-south-1"),
            ("AWS_ACCESS_KEY_ID", "AKIAHALF"),
        ],
    );
    assert_eq!(
        resolved().await,
        ("ap-south-1".to_owned(), "AKIAPROFILE".to_owned(), None)
    );

    std::fs::remove_dir_all(&dir).ok();
}
