// The coordinator's "Patient (for the hospital record)" form on the landing page: shown only
// when the page was opened with an administrator token (/#token=…); reads and records the
// details through /api/consultations/<id>/patient. The details never reach the console.

import { apiFetch, refusalText } from "./api.js";
import { msg, setText } from "./i18n.js";
import { takeToken } from "./session.js";
import { $ } from "./ui.js";

const FIELDS = ["patient_id", "issuer", "family_name", "given_names", "birth_date", "sex"];
const REFUSALS = {
  403: "patient.error.forbidden",
  404: "patient.error.unknownConsultation",
};
// The API's 400 codes for details it refused (signaling/db/patients.py PROBLEMS); any other is
// said by the generic patient.error.invalid, never by the server's English reason.
const PROBLEMS = {
  "patient-id-missing": "patient.error.missingId",
  "patient-field-too-long": "patient.error.fieldTooLong",
  "patient-forbidden-character": "patient.error.forbiddenCharacter",
  "patient-name-too-long": "patient.error.nameTooLong",
  "patient-birth-date": "patient.error.birthDate",
  "patient-sex": "patient.error.sex",
};

/** Shows the form for an administrator token; does nothing for any other visitor. */
export async function startPatientForm() {
  const token = takeToken("index");
  if (!token) return;
  let session;
  try {
    session = await (await apiFetch("/api/session", { token })).json();
  } catch {
    return; // an expired or foreign token: the landing page stays as it is for everyone
  }
  if (session.role !== "admin") return;
  const form = $("#patient-form");
  const consultation = $("#patient-consultation");
  $("#patient-birth-date").max = new Date().toISOString().slice(0, 10);
  if (session.consultation !== "*") {
    consultation.value = session.consultation;
    consultation.readOnly = true;
  }
  $("#patient-panel").hidden = false;
  let shown = ""; // the consultation whose details the form holds: a second change event is no reload
  const load = async () => {
    const cid = consultation.value.trim();
    if (!cid || cid === shown) return;
    shown = cid;
    await loadDetails(token, cid, form);
  };
  consultation.addEventListener("change", load);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    save(token, consultation.value.trim(), form);
  });
  await load();
}

async function loadDetails(token, cid, form) {
  try {
    const response = await apiFetch(`/api/consultations/${encodeURIComponent(cid)}/patient`, { token });
    const { patient } = await response.json();
    for (const field of FIELDS) form.elements[field].value = patient?.[field] ?? (field === "sex" ? "unknown" : "");
    status(patient ? msg("patient.onRecord", { time: { date: patient.recorded_at } }) : msg("patient.none"));
  } catch (err) {
    status(refusal(err), true);
  }
}

async function save(token, cid, form) {
  if (!cid) return status(msg("patient.error.missingConsultation"), true);
  if (!form.elements.patient_id.value.trim()) return status(msg("patient.error.missingId"), true);
  if (!form.elements.birth_date.checkValidity()) return status(msg("patient.error.birthDate"), true);
  const body = {};
  for (const field of FIELDS) {
    const value = form.elements[field].value.trim();
    if (value) body[field] = value;
  }
  try {
    await apiFetch(`/api/consultations/${encodeURIComponent(cid)}/patient`, { token, method: "PUT", body });
    status(msg("patient.saved", { consultation: cid, time: { date: new Date() } }));
  } catch (err) {
    status(refusal(err), true);
  }
}

function refusal(err) {
  if (REFUSALS[err?.status]) return msg(REFUSALS[err.status]);
  if (err?.status === 400) return msg(PROBLEMS[err.code] ?? "patient.error.invalid");
  return refusalText(err);
}

function status(text, error = false) {
  const node = $("#patient-status");
  node.dataset.level = error ? "error" : "info";
  setText(node, text);
}
