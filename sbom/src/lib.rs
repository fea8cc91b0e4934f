//! CycloneDX SBOMs.
