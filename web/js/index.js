// The landing page: static text in the visitor's language (with the language picker), and the
// coordinator's patient form when opened with an administrator token.

import { loadLanguage } from "./i18n.js";
import { startPatientForm } from "./patient.js";

loadLanguage()
  .then(startPatientForm)
  .catch((err) => console.error("[endolink] landing page", err));
