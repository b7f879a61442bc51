#!/usr/bin/env bash
# Install the TeX packages the report needs, from Debian, if latexmk is missing.
set -euo pipefail
if command -v latexmk >/dev/null && command -v pdfinfo >/dev/null; then
    exit 0
fi
packages=(texlive-latex-extra texlive-science lmodern latexmk poppler-utils)
if ! command -v apt-get >/dev/null; then
    echo "latexmk/pdfinfo not found and this is not a Debian-like system: install a TeX distribution" \
         "with latexmk, siunitx, cleveref, natbib, booktabs, microtype, lmodern, and poppler's pdfinfo." >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "Installing TeX from Debian (about 90 s): ${packages[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
