//! The web console through the real `mend up`, read as HTML (`scraper`):
//! signing in with a token to a session cookie, the inbox, an incident's
//! page, approving and rejecting with the CSRF token and the person's role,
//! the live event stream, and a schema and a rejection holding HTML and
//! script that the pages print as text.

use anyhow::Context as _;
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use mend_model::{Channel, IncidentStatus};
use mend_store::Warehouse;
use mend_tests::{Deployment, eventually, produce_avro, producer, register_schema};
use scraper::{Html, Selector};
use serde_json::json;

/// What a field's doc and a rejection carry: markup that must stay text.
const HOSTILE: &str = "<script>window.pwned=1</script><img src=x onerror=alert(1)>";

fn schema(version: u8) -> String {
    let fields = match version {
        1 => json!([{"name": "id", "type": "long"}, {"name": "email", "type": "string"}]),
        2 => json!([{"name": "id", "type": "long"},
                    {"name": "customer_email", "type": "string", "aliases": ["email"], "doc": HOSTILE}]),
        3 => json!([{"name": "id", "type": "long"},
                    {"name": "contact_email", "type": "string", "aliases": ["customer_email"], "doc": HOSTILE}]),
        _ => json!([{"name": "id", "type": "long"},
                    {"name": "customer_email", "type": "string", "aliases": ["email"]},
                    {"name": "note", "type": ["null", "string"], "default": null}]),
    };
    json!({"type": "record", "name": "Order", "namespace": "shop", "fields": fields}).to_string()
}

fn order(version: u8, id: i64) -> Avro {
    let field = ["email", "customer_email", "contact_email", "customer_email"][usize::from(version) - 1];
    let mut fields = vec![("id".into(), Avro::Long(id)), (field.into(), Avro::String(format!("{HOSTILE}{id}")))];
    if version == 4 {
        fields.push(("note".into(), Avro::Union(1, Box::new(Avro::String("n".into())))));
    }
    Avro::Record(fields)
}

async fn produce_orders(deployment: &Deployment, version: u8, ids: std::ops::Range<i64>) -> anyhow::Result<()> {
    let text = schema(version);
    let id = register_schema(&format!("{}-value", deployment.topic()), &text).await?;
    let parsed = Schema::parse_str(&text)?;
    let producer = producer()?;
    for order_id in ids {
        produce_avro(&producer, &deployment.topic(), &order_id.to_string(), id, &parsed, order(version, order_id))
            .await?;
    }
    Ok(())
}

/// A browser without JavaScript: one session cookie, redirects not followed.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    html: Html,
    text: String,
}

impl Page {
    fn select(&self, css: &str) -> Vec<scraper::ElementRef<'_>> {
        let selector = Selector::parse(css).unwrap_or_else(|e| panic!("selector {css}: {e:?}"));
        self.html.select(&selector).collect()
    }

    fn texts(&self, css: &str) -> Vec<String> {
        self.select(css).iter().map(|e| e.text().collect::<String>()).collect()
    }

    /// The value of the hidden CSRF field of the first form.
    fn csrf(&self) -> anyhow::Result<String> {
        self.select("input[name=csrf]")
            .first()
            .and_then(|e| e.value().attr("value"))
            .map(str::to_owned)
            .context("no CSRF field on the page")
    }
}

impl Browser {
    fn new(api: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self { base: format!("http://{api}"), http, cookie: None })
    }

    async fn read(&self, response: reqwest::Response) -> anyhow::Result<Page> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let location = headers.get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response.text().await?;
        Ok(Page { status, location, headers, html: Html::parse_document(&text), text })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Page> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        self.read(request.send().await?).await
    }

    /// A form posted as a browser posts it from this console's page.
    async fn post(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> anyhow::Result<Page> {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin.map_or_else(|| self.base.clone(), str::to_owned))
            .body(body);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        self.read(request.send().await?).await
    }

    /// Signs in with `token`; checks the cookie is HttpOnly and SameSite=Strict.
    async fn sign_in(&mut self, token: &str) -> anyhow::Result<()> {
        self.cookie = None;
        let response = self
            .http
            .post(format!("{}/console/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &self.base)
            .body(form_urlencoded::Serializer::new(String::new()).append_pair("token", token).finish())
            .send()
            .await?;
        if response.status() != 303 {
            let status = response.status();
            anyhow::bail!("sign-in answered {status}: {}", response.text().await?);
        }
        let set = response.headers().get("set-cookie").context("no cookie")?.to_str()?.to_owned();
        anyhow::ensure!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        self.cookie = Some(set.split(';').next().unwrap_or_default().to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn sign_in_read_decide_and_nothing_runs_from_the_data() -> anyhow::Result<()> {
    // Added fields wait for a person too: a plan with a statement to vet.
    let mut deployment = Deployment::new("sqlite", "[dataset.policy]\nfield_added = \"approve\"\n")?;
    deployment.env = vec![(
        "MEND_API_TOKENS".into(),
        "vic:viewer:viewer-token,alice:approver:approver-token,ada:admin:admin-token".into(),
    )];
    let mut up = deployment.up("up.log").await?;
    let api = deployment.api.clone();
    let mut browser = Browser::new(&api)?;

    // Signed out: every page sends the browser to sign in, and back after.
    let page = browser.get("/").await?;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/console/login?next=%2F"));
    let login = browser.get("/console/login?next=%2F").await?;
    assert_eq!(login.status, 200);
    assert_eq!(login.select("input[name=token][type=password]").len(), 1, "{}", login.text);
    let csp = login.headers.get("content-security-policy").context("no CSP")?.to_str()?;
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let wrong = browser.post("/console/login", &[("token", "nope")], None).await?;
    assert_eq!(wrong.status, 401);
    assert!(wrong.texts(".error").concat().contains("unknown token"));
    let elsewhere = browser.post("/console/login", &[("token", "approver-token")], Some("http://evil.example")).await?;
    assert_eq!(elsewhere.status, 401, "a sign-in posted from another site");

    // A rename waits for a person.
    produce_orders(&deployment, 1, 0..3).await?;
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    eventually("3 rows", || {
        let (warehouse, table) = (warehouse.clone(), deployment.dataset.clone());
        async move { Ok((warehouse.count(&table).await.unwrap_or(0) >= 3).then_some(())) }
    })
    .await?;
    produce_orders(&deployment, 2, 3..5).await?;
    let dataset = deployment.dataset.clone();
    let bearer = |token: &str| format!("Bearer {token}");
    let read = reqwest::Client::new();
    let waiting = eventually("the rename to wait", || {
        let (read, api, dataset, auth) = (read.clone(), api.clone(), dataset.clone(), bearer("viewer-token"));
        async move {
            let list: Vec<mend_model::api::Incident> =
                read.get(format!("http://{api}/incidents")).header("authorization", auth).send().await?.json().await?;
            Ok(list.into_iter().find(|i| i.dataset == dataset && i.status == IncidentStatus::AwaitingApproval))
        }
    })
    .await?;

    // The viewer's inbox: the incident waits, with its change and who is asked.
    browser.sign_in("viewer-token").await?;
    let inbox = browser.get("/").await?;
    assert_eq!(inbox.status, 200, "{}", inbox.text);
    let rows = inbox.select(&format!(".waiting tr[data-incident='{}']", waiting.id));
    let row = rows.first().context("the waiting incident is not in the inbox")?;
    let row_text = row.text().collect::<String>();
    assert!(row_text.contains("waiting for a person") && row_text.contains("alice"), "{row_text}");
    let chip = Selector::parse(".chip.renamed").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(row.select(&chip).any(|c| c.text().collect::<String>().contains("customer_email")), "{row_text}");
    assert_eq!(inbox.texts("header .role"), vec!["viewer"]);

    // The viewer's incident page: the diff, the plan, and disabled buttons
    // that say why.
    let path = format!("/console/incidents/{}", waiting.id);
    let page = browser.get(&path).await?;
    assert_eq!(page.status, 200);
    assert!(page.texts("table.diff").concat().contains("email → customer_email"), "{}", page.text);
    assert!(page.texts("table.diff").concat().contains("email TEXT NULL"), "what the table holds: {}", page.text);
    assert!(!page.select("ol.steps li").is_empty(), "the plan's steps");
    let held = page.texts("section.records tbody tr");
    assert_eq!(held.len(), 2, "the two records it holds: {}", page.text);
    assert!(held.iter().all(|r| r.contains(HOSTILE)), "shown as written, as text: {held:?}");
    assert!(held.iter().all(|r| r.contains(r#""email":"<script>"#)), "and under its column after the plan: {held:?}");
    assert!(page.texts("section.records").concat().contains("customer_email → column email"), "where they go");
    assert!(
        page.texts("ol.steps").concat().contains("2 records at partition:offset 0:3, 0:4"),
        "what the replay replays"
    );
    let approve = page.select("form.approve button");
    assert!(approve.first().and_then(|b| b.value().attr("disabled")).is_some(), "a viewer's approve is disabled");
    assert!(page.texts(".why-not").concat().contains("needs the approver role"));
    let proposal = waiting.proposal_id.clone().context("no proposal")?;
    let csrf = page.csrf()?;
    let refused = browser.post(&format!("{path}/approve"), &[("csrf", &csrf), ("proposal", &proposal)], None).await?;
    assert_eq!(refused.status, 403, "a viewer cannot approve");

    // The approver: a form without the session's token, or from another
    // site, is refused; the real one is recorded with channel console.
    browser.sign_in("approver-token").await?;
    let page = browser.get(&path).await?;
    let will = page.texts("form.approve .will").concat();
    assert!(will.contains("replays 2 records"), "approve says what it does: {will}");
    let csrf = page.csrf()?;
    let forged = browser.post(&format!("{path}/approve"), &[("csrf", "guess"), ("proposal", &proposal)], None).await?;
    assert_eq!(forged.status, 403);
    let cross = browser
        .post(&format!("{path}/approve"), &[("csrf", &csrf), ("proposal", &proposal)], Some("http://evil.example"))
        .await?;
    assert_eq!(cross.status, 403);

    // The live stream says when the decision changed the read model.
    let mut events = read
        .get(format!("http://{api}/console/events"))
        .header("cookie", browser.cookie.clone().unwrap_or_default())
        .send()
        .await?;
    assert_eq!(events.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));

    let done = browser.post(&format!("{path}/approve"), &[("csrf", &csrf), ("proposal", &proposal)], None).await?;
    assert_eq!(done.status, 303, "{}", done.text);
    let mut seen = String::new();
    while !seen.contains("event: change") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), events.chunk())
            .await
            .context("no change event within 30 s")??
            .context("the event stream ended")?;
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let healed = eventually("the approved rename to heal", || {
        let (read, api, id, auth) = (read.clone(), api.clone(), waiting.id.clone(), bearer("viewer-token"));
        async move {
            let incident: mend_model::api::Incident = read
                .get(format!("http://{api}/incidents/{id}"))
                .header("authorization", auth)
                .send()
                .await?
                .json()
                .await?;
            Ok((incident.status == IncidentStatus::Healed).then_some(incident))
        }
    })
    .await?;
    let decision = healed.decision.context("no decision")?;
    assert_eq!((decision.by.as_str(), decision.channel), ("alice", Channel::Console));
    let inbox = browser.get("/").await?;
    let row = inbox.texts(&format!(".all tr[data-incident='{}']", waiting.id)).concat();
    assert!(row.contains("healed") && row.contains("approved by alice (console)"), "{row}");

    // A second rename, rejected with markup in its reason: every page
    // prints it, and the field's doc, as text.
    produce_orders(&deployment, 3, 5..6).await?;
    let second = eventually("the second rename to wait", || {
        let (read, api, dataset, first, auth) =
            (read.clone(), api.clone(), dataset.clone(), waiting.id.clone(), bearer("viewer-token"));
        async move {
            let list: Vec<mend_model::api::Incident> =
                read.get(format!("http://{api}/incidents")).header("authorization", auth).send().await?.json().await?;
            Ok(list
                .into_iter()
                .find(|i| i.dataset == dataset && i.id != first && i.status == IncidentStatus::AwaitingApproval))
        }
    })
    .await?;
    let path = format!("/console/incidents/{}", second.id);
    let page = browser.get(&path).await?;
    let csrf = page.csrf()?;
    let proposal = second.proposal_id.clone().context("no proposal")?;
    let without = browser.post(&format!("{path}/reject"), &[("csrf", &csrf), ("proposal", &proposal)], None).await?;
    assert_eq!(without.status, 200, "a rejection without a reason is shown again with why");
    assert!(without.texts(".error").concat().contains("needs a reason code"));
    let rejected = browser
        .post(
            &format!("{path}/reject"),
            &[("csrf", &csrf), ("proposal", &proposal), ("code", "wrong_producer"), ("text", HOSTILE)],
            None,
        )
        .await?;
    assert_eq!(rejected.status, 303, "{}", rejected.text);
    let page = eventually("the rejection on the page", || {
        let (browser, path) = (&browser, path.clone());
        async move {
            let page = browser.get(&path).await?;
            Ok(page.texts(".decided").concat().contains("rejected").then_some(page))
        }
    })
    .await?;
    let decided = page.texts(".decided").concat();
    assert!(decided.contains("wrong_producer: <script>window.pwned=1</script>"), "shown as text: {decided}");
    for page in [&page, &browser.get("/").await?] {
        assert!(page.select("script").iter().all(|s| s.value().attr("src") == Some("/console/assets/console.js")));
        assert!(page.select("img").is_empty(), "no element from the data");
        let raw = page
            .text
            .match_indices("pwned")
            .map(|(at, _)| &page.text[at.saturating_sub(40)..at + 40])
            .collect::<Vec<_>>();
        assert!(!page.text.contains("<script>window"), "{raw:?}");
    }

    // The other pages, as the viewer: datasets, one dataset with its
    // history diffed and its time to heal plotted, the audit log verified
    // and exported, and the incident's timeline with the check's verdict.
    browser.sign_in("viewer-token").await?;
    let list = browser.get("/console/datasets").await?;
    assert_eq!(list.status, 200);
    assert!(!list.select(&format!("tr[data-dataset='{dataset}']")).is_empty(), "{}", list.text);
    let page = browser.get(&format!("/console/datasets/{dataset}?a=1&b=2")).await?;
    assert_eq!(page.status, 200);
    assert!(page.texts("table.columns").concat().contains("email"), "the table's columns");
    assert_eq!(page.select(".plot svg circle").len(), 1, "one healed incident plotted");
    assert!(page.texts(".history table.diff").concat().contains("email → customer_email"), "{}", page.text);
    let samples = browser.get(&format!("/console/datasets/{dataset}/samples")).await?;
    let latest = samples.texts("tbody tr");
    assert_eq!(latest.len(), 6, "every record of the topic, newest first: {}", samples.text);
    assert!(latest[0].contains("0:5") && latest[0].contains("contact_email"), "{latest:?}");
    let audit = browser.get("/console/audit").await?;
    let csrf = audit.csrf()?;
    let verified = browser.post("/console/audit/verify", &[("csrf", &csrf)], None).await?;
    assert_eq!(verified.status, 303);
    let audit = browser.get("/console/audit").await?;
    assert!(audit.texts(".verify .state").concat().contains("events and"), "{}", audit.text);
    let export = read
        .get(format!("http://{api}/console/audit/export?dataset={dataset}"))
        .header("cookie", browser.cookie.clone().unwrap_or_default())
        .send()
        .await?;
    assert_eq!(export.status(), 200);
    assert!(
        export.headers().get("content-disposition").is_some_and(|v| v.to_str().unwrap_or("").starts_with("attachment"))
    );
    let lines = export.text().await?;
    // Read back as mend audit verify --file reads an export.
    let (header, entries) = mend_audit::read_export(&lines)?;
    assert_eq!(header.dataset.as_deref(), Some(dataset.as_str()), "{header:?}");
    assert!(entries.iter().any(|e| e.event().is_some_and(|ev| ev.envelope().dataset == dataset)));
    let page = browser.get(&format!("/console/incidents/{}", waiting.id)).await?;
    assert!(!page.select(".timeline .badge").is_empty(), "the timeline after a check");
    assert!(page.texts(".timeline").concat().contains("decision"), "{}", page.text);

    // A field added (policy: approve) is a statement: the page shows the
    // guardrails' verdict on it, from the allow-list and a dry run.
    produce_orders(&deployment, 4, 6..7).await?;
    let added = eventually("the added field to wait", || {
        let (read, api, dataset, auth) = (read.clone(), api.clone(), dataset.clone(), bearer("viewer-token"));
        async move {
            let list: Vec<mend_model::api::Incident> =
                read.get(format!("http://{api}/incidents")).header("authorization", auth).send().await?.json().await?;
            Ok(list.into_iter().find(|i| {
                i.dataset == dataset
                    && i.status == IncidentStatus::AwaitingApproval
                    && i.changes.iter().any(|c| c.field == "note")
            }))
        }
    })
    .await?;
    let page = browser.get(&format!("/console/incidents/{}", added.id)).await?;
    let verdicts = page.texts("ol.steps .verdict.allowed");
    assert_eq!(verdicts.len(), 1, "{}", page.text);
    assert!(verdicts[0].contains("dry run"), "{verdicts:?}");
    assert!(page.texts("form.approve .will").concat().contains("runs 1 statement on"));

    // Every page, every role: each reads them all; only viewers are kept
    // from deciding.
    for (token, role) in [("viewer-token", "viewer"), ("approver-token", "approver"), ("admin-token", "admin")] {
        browser.sign_in(token).await?;
        for path in [
            "/".to_owned(),
            "/?status=healed".to_owned(),
            format!("/console/incidents/{}", added.id),
            "/console/datasets".to_owned(),
            format!("/console/datasets/{dataset}"),
            format!("/console/datasets/{dataset}/samples"),
            "/console/audit".to_owned(),
        ] {
            let page = browser.get(&path).await?;
            assert_eq!(page.status, 200, "{role} {path}");
            assert_eq!(page.texts("header .role"), vec![role], "{path}");
        }
        let page = browser.get(&format!("/console/incidents/{}", added.id)).await?;
        let disabled = page.select("form.approve button").first().and_then(|b| b.value().attr("disabled")).is_some();
        assert_eq!(disabled, role == "viewer", "{role}");
    }

    up.kill().await?;
    Ok(())
}
