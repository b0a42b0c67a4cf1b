"""One module per tab of the app. Each `build_*` lays its tab out inside the app's gr.Tabs and returns
its components with `part` (what they show for a session.Session); `wire` then hooks up the tab's own
events, once every tab has bound its session inputs. Handlers that change several views live in app.py."""
