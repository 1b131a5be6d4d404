//! The route table from the design: every public path, its methods, and
//! whether it is a cron target. Vercel maps each `api/**/*.rs` file to its
//! path; the dev server serves all of them on one port.

use http::Method;

/// A known route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Health,
    CronProbe,
    CronEvaluate,
    CronBackups,
    Alerts,
    Approve,
    SlackActions,
    Rollback,
    Incidents,
    Dashboard,
}

/// Every route, with its path.
pub const ROUTES: &[(Route, &str)] = &[
    (Route::Health, "/api/health"),
    (Route::CronProbe, "/api/cron/probe"),
    (Route::CronEvaluate, "/api/cron/evaluate"),
    (Route::CronBackups, "/api/cron/backups"),
    (Route::Alerts, "/api/alerts"),
    (Route::Approve, "/api/approve"),
    (Route::SlackActions, "/api/slack/actions"),
    (Route::Rollback, "/api/rollback"),
    (Route::Incidents, "/api/incidents"),
    (Route::Dashboard, "/api/dashboard"),
];

impl Route {
    /// The route serving `path` (a trailing slash is ignored; `/api/incidents/{id}`
    /// belongs to `Incidents`).
    pub fn find(path: &str) -> Option<Route> {
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        if let Some(rest) = path.strip_prefix("/api/incidents/") {
            return (!rest.is_empty() && !rest.contains('/')).then_some(Route::Incidents);
        }
        ROUTES.iter().find(|(_, p)| *p == path).map(|(r, _)| *r)
    }

    /// The route's path.
    pub fn path(self) -> &'static str {
        ROUTES
            .iter()
            .find(|(r, _)| *r == self)
            .map(|(_, p)| *p)
            .expect("every route is in ROUTES")
    }

    /// Vercel cron targets (GET with `Authorization: Bearer $CRON_SECRET`).
    pub fn is_cron(self) -> bool {
        matches!(
            self,
            Route::CronProbe | Route::CronEvaluate | Route::CronBackups
        )
    }

    /// Methods the route accepts, for `405` answers.
    pub fn allowed(self) -> &'static str {
        match self {
            Route::Health | Route::Incidents => "GET, HEAD",
            Route::Dashboard => "GET, HEAD, POST",
            Route::CronProbe | Route::CronEvaluate | Route::CronBackups => "GET",
            Route::Approve | Route::Alerts => "GET, POST",
            Route::SlackActions | Route::Rollback => "POST",
        }
    }

    /// Whether `m` is accepted.
    pub fn allows(self, m: &Method) -> bool {
        self.allowed().split(", ").any(|a| a == m.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_routes_with_and_without_trailing_slash() {
        assert_eq!(Route::find("/api/health"), Some(Route::Health));
        assert_eq!(Route::find("/api/health/"), Some(Route::Health));
        assert_eq!(Route::find("/api/cron/probe"), Some(Route::CronProbe));
        assert_eq!(Route::find("/api/incidents/inc_42"), Some(Route::Incidents));
        assert_eq!(Route::find("/api/incidents/inc_42/x"), None);
        assert_eq!(Route::find("/api/nope"), None);
        assert_eq!(Route::find("/"), None);
    }

    #[test]
    fn every_route_round_trips_through_its_path() {
        for (r, p) in ROUTES {
            assert_eq!(Route::find(p), Some(*r));
            assert_eq!(r.path(), *p);
        }
    }

    #[test]
    fn methods_are_checked() {
        assert!(Route::Approve.allows(&Method::GET));
        assert!(Route::Approve.allows(&Method::POST));
        assert!(!Route::Alerts.allows(&Method::PUT));
        assert!(!Route::CronProbe.allows(&Method::POST));
    }
}
