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

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function report(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

module.exports = { connect, connected, hangUp, report, sleep };
