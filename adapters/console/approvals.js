// The seam for tool approvals (issue 17, "Tool approvals from any client" — not built yet).
//
// What will live here: when a turn's agent asks to use a tool (a `cli.control_request` with subtype
// `can_use_tool`, once the server forwards permission prompts instead of pre-approving `--allowedTools`),
// the turn shows an *approval card* — the tool, its input, Allow / Deny (and "always allow" where the
// server offers it) — answered through the server's approval endpoint; any client that follows the turn
// sees the card, and the first answer wins (the others see it answered). The session list and the session
// header show a "waiting for you" badge while a session has a pending approval, fed by the live session
// summaries (GET /v1/sessions/events).
//
// Until then every hook is a no-op that the rest of the console already calls at the right places, so
// adding approvals touches this module (and CSS) only:
//   * onControl(turnView, entry)  — a control request/cancel of a turn (turn-view.js, applyCli)
//   * pendingFor(sessionInfo)     — how many approvals a session waits for (sessions.js: the badge)
//   * permissionModes(serverInfo) — the permission modes the server accepts (new-session.js: the field is
//                                   disabled with a note while this is empty)

export const approvals = {
  /** A `cli.control_request` / `cli.control_cancel_request` entry of the turn `view` (not used yet). */
  onControl(view, entry) {
    void view;
    void entry;
  },

  /** The number of tool approvals the session waits for (0 until issue 17: no badge is drawn). */
  pendingFor(info) {
    void info;
    return 0;
  },

  /** Permission modes a new session may ask for; empty until the server advertises "permission_mode". */
  permissionModes(serverInfo) {
    const features = (serverInfo && serverInfo.features) || [];
    return features.includes("permission_mode") ? ["default", "acceptEdits", "plan", "bypassPermissions"] : [];
  },
};
