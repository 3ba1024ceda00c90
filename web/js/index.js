// The landing page: static text only, in the visitor's language (with the language picker).

import { loadLanguage } from "./i18n.js";

loadLanguage().catch((err) => console.error("[endolink] language", err));
