// WHIP/WHEP from Node (RFC 9725), shared by the interop clients: POST the offer once ICE gathering
// is complete (no trickle), apply the answer, DELETE the session at the end. The token comes from
// $ENDOLINK_TOKEN, never from the command line.
"use strict";

const GATHER_TIMEOUT_MS = 5000;

async function gathered(pc) {
  const deadline = Date.now() + GATHER_TIMEOUT_MS;
  while (pc.iceGatheringState !== "complete" && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// POST the offer; resolves to { status, reason, location } (reason: the server's JSON "reason").
async function connect(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "Content-Type": "application/sdp",
      Authorization: `Bearer ${process.env.ENDOLINK_TOKEN}`,
    },
    body: pc.localDescription.sdp,
  });
  const body = await response.text();
  if (response.status !== 201) {
    let reason = body;
    try {
      reason = JSON.parse(body).reason;
    } catch (error) {
      void error;
    }
    return { status: response.status, reason, location: null };
  }
  await pc.setRemoteDescription({ type: "answer", sdp: body });
  return { status: 201, reason: null, location: new URL(response.headers.get("Location"), url).href };
}

async function hangUp(location) {
  if (location) {
    await fetch(location, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${process.env.ENDOLINK_TOKEN}` },
    }).catch(() => undefined);
  }
}

// Resolves true once pc.connectionState is "connected", false after timeoutMs.
async function connected(pc, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (pc.connectionState !== "connected" && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return pc.connectionState === "connected";
}

// Plays: opens the session, waits until done() or `seconds` pass, hangs up. Resolves to
// { session, up } (session: what connect() said; up: whether the connection came up).
async function playUntil(pc, url, seconds, done) {
  const session = await connect(pc, url);
  if (session.status !== 201) {
    return { session, up: false };
  }
  const up = await connected(pc, 10000);
  const deadline = Date.now() + seconds * 1000;
  while (up && !done() && Date.now() < deadline) {
    await sleep(50);
  }
  await hangUp(session.location);
  return { session, up };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function report(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// Runs a client's work on pc and prints its result as one JSON line; exit code 0 for a session
// the server accepted (201), 1 for a refusal, 2 for an error.
function run(pc, work) {
  work()
    .then((result) => {
      report(result);
      process.exitCode = result.status === 201 ? 0 : 1;
    })
    .catch((error) => {
      report({ status: 0, reason: String(error) });
      process.exitCode = 2;
    })
    .finally(() => pc.close());
}

module.exports = { connect, connected, hangUp, playUntil, run, sleep };
