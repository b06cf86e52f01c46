#!/usr/bin/env bash
# Install the Debian packages the suite reads data from, when they are missing.
#   dataset-fashion-mnist  the 70,000 Fashion-MNIST images (IDX files)
#   fortunes               categorized quotes, the text data of the sequence app
#   graphviz               the dot renderer of keras.utils.plot_model (apps/visualize architecture)
set -euo pipefail
packages=(dataset-fashion-mnist fortunes graphviz)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
