mod jcs;
